"""An app with its own Dockerfile (shipbot.toml [build]) built by DockerBuilder on the real engine and registry:
the model lands at model_path, the SHIPBOT_* build args reach the Dockerfile that declares them, the image carries
ShipBot's labels and its [smoke] contract, which the smoke test and the local deployer follow (its port, its
readiness and identity routes); a bad manifest fails the build with file, key and line, pushing nothing."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shared import buildcontext, buildplan, errors, manifest, ports
from shared.adapters.local import containers
from shared.adapters.local.deployer import DockerDeployer
from shared.adapters.local.docker_builder import DockerBuilder
from shared.adapters.local.git_source import GitSource
from shared.adapters.local.registry import DistributionRegistry
from shared.adapters.local.smoke import DockerSmokeRunner
from shared.releases import Model
from tests import localstack

pytestmark = pytest.mark.integration
REPOSITORY = "shipbot-test/own-image"

DOCKERFILE = """\
FROM python:3.11-slim
ARG SHIPBOT_RELEASE_ID
ARG SHIPBOT_MODEL_SHA256
ENV RELEASE_ID=${SHIPBOT_RELEASE_ID} MODEL_SHA256=${SHIPBOT_MODEL_SHA256}
WORKDIR /app
COPY serve.py .
COPY weights/ weights/
EXPOSE 8000
CMD ["python", "serve.py"]
"""


def own_app(root: Path, manifest: str) -> tuple[Path, str]:
    repo = root / "own-app"
    (repo / "docker").mkdir(parents=True)
    (repo / "docker" / "Dockerfile").write_text(DOCKERFILE)
    (repo / "docker" / "serve.py").write_text("print('serving')\n")
    (repo / "docker" / "weights").mkdir()
    (repo / "docker" / "weights" / "stale.joblib").write_text("the repository's own copy, replaced by the model")
    (repo / "shipbot.toml").write_text(manifest)
    return repo, localstack.commit_tree(repo)


@pytest.fixture
def builder(tmp_path):
    builder = DockerBuilder(client=localstack.docker_client(), log_dir=tmp_path / "logs")
    yield builder
    builder.close()


@pytest.fixture
def model_inputs():
    folder = localstack.sample_model()
    model = Model("diabetes", "8", buildcontext.sha256_file(folder / "model.joblib"), "diabetes/8/model.joblib",
                  datetime(2026, 3, 1, tzinfo=UTC))
    return folder, model, localstack.FolderModels({("diabetes", "8"): folder})


def request_for(commit: str, model: Model) -> ports.BuildRequest:
    return ports.BuildRequest(release_id=f"r-{uuid.uuid4().hex[:16]}", commit=commit, model=model,
                              repository=f"{localstack.REGISTRY}/{REPOSITORY}", tag=f"t-{uuid.uuid4().hex[:8]}")


def test_an_own_dockerfile_builds_with_the_model_at_its_path_and_shipbots_labels(builder, model_inputs, tmp_path):
    folder, model, models = model_inputs
    repo, commit = own_app(tmp_path, '[build]\ndockerfile = "docker/Dockerfile"\ncontext = "docker"\n'
                                     'model_path = "weights/"\n')
    request = request_for(commit, model)

    build = builder.wait(builder.begin_build(request, GitSource(repo=repo), models), timeout=600)

    assert build.state is ports.BuildState.SUCCEEDED, build.error
    image = DistributionRegistry(host=localstack.REGISTRY).get_image(REPOSITORY, build.digest)
    assert image.labels["dev.shipbot.release.id"] == request.release_id
    assert image.labels["dev.shipbot.model.sha256"] == model.sha256
    assert image.labels["org.opencontainers.image.revision"] == commit
    with tempfile.TemporaryDirectory() as tree:  # the effective manifest and Dockerfile that built it
        GitSource(repo=repo).archive(commit, Path(tree))
        assert image.labels[buildplan.MANIFEST_LABEL] == manifest.load(Path(tree)).fingerprint(Path(tree))
    ref = f"{request.repository}@{build.digest}"
    listing = localstack.docker_client().containers.run(
        ref, ["sh", "-c", "ls weights; sha256sum weights/model.joblib; echo $RELEASE_ID $MODEL_SHA256"],
        remove=True).decode()
    lines = listing.strip().splitlines()
    assert "stale.joblib" not in lines and "model.joblib" in lines  # the model version's folder, not the repo's
    assert any(line.startswith(model.sha256) for line in lines)
    assert lines[-1] == f"{request.release_id} {model.sha256}"  # build args the Dockerfile declared


def test_a_bad_manifest_fails_the_build_with_file_key_and_line_and_pushes_nothing(builder, model_inputs, tmp_path):
    _, model, models = model_inputs
    repo, commit = own_app(tmp_path, '[build]\ndockerfile = "docker/Dockerfile"\nkontext = "docker"\n')
    request = request_for(commit, model)

    build = builder.wait(builder.begin_build(request, GitSource(repo=repo), models), timeout=600)

    assert build.state is ports.BuildState.FAILED
    assert build.error == "shipbot.toml, [build] kontext (line 3): unknown key"
    with pytest.raises(errors.NotFound):
        DistributionRegistry(host=localstack.REGISTRY).get_image(REPOSITORY, request.tag)


SERVE = """\
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer

RELEASE = os.environ.get("IDENTITY", os.environ.get("RELEASE_ID"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        routes = {"/healthcheck": {"ok": True}, "/about": {"running": RELEASE}}
        self.send(200, routes[self.path]) if self.path in routes else self.send(404, {})

    def do_POST(self):
        sample = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.send(200, {"result": [os.path.getsize("weights/model.joblib")], "rows": len(sample["data"])})

    def send(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""
SERVING_MANIFEST = """\
[build]
dockerfile = "docker/Dockerfile"
context = "docker"
model_path = "weights/"

[smoke]
ready_path = "/healthcheck"
identity_path = "/about"
expect_keys = ["result", "rows"]
"""


def serving_app(tmp_path: Path, *, dockerfile_env: str = "") -> tuple[Path, str]:
    repo, _ = own_app(tmp_path, SERVING_MANIFEST)
    (repo / "docker" / "serve.py").write_text(SERVE)
    if dockerfile_env:
        (repo / "docker" / "Dockerfile").write_text(DOCKERFILE.replace("WORKDIR /app", f"ENV {dockerfile_env}\nWORKDIR /app"))
    return repo, localstack.commit_tree(repo, "serve")


def built(builder, models, model, repo: Path, commit: str) -> tuple[str, ports.BuildRequest]:
    request = request_for(commit, model)
    build = builder.wait(builder.begin_build(request, GitSource(repo=repo), models), timeout=600)
    assert build.state is ports.BuildState.SUCCEEDED, build.error
    return f"{request.repository}@{build.digest}", request


def test_the_smoke_test_and_the_deployer_follow_the_apps_own_contract(builder, model_inputs, tmp_path):
    _, model, models = model_inputs
    repo, commit = serving_app(tmp_path)
    ref, request = built(builder, models, model, repo, commit)
    expected = ports.Expectation(request.release_id, commit=commit)

    verdict = DockerSmokeRunner(client=localstack.docker_client(), budget_seconds=60,
                                name_prefix="shipbot-test-own-smoke").run(ref, expected)
    assert (verdict.passed, verdict.reason) == (True, "")

    name = f"shipbot-test-own-{uuid.uuid4().hex[:6]}"
    deployer = DockerDeployer(client=localstack.docker_client(), ports={"staging": free_port()}, name_prefix=name,
                              verify_seconds=60)
    try:
        rollout = deployer.deploy("staging", ref, expected)
        assert (rollout.passed, rollout.reason) == (True, "")
        assert httpx.get(f"{deployer.url('staging')}/about", timeout=5).json() == {"running": request.release_id}
    finally:
        containers.remove(localstack.docker_client(), f"{name}-staging")


def test_an_app_whose_identity_route_names_another_release_fails_its_smoke_test(builder, model_inputs, tmp_path):
    _, model, models = model_inputs
    repo, commit = serving_app(tmp_path, dockerfile_env="IDENTITY=r-someone-else")
    ref, request = built(builder, models, model, repo, commit)

    verdict = DockerSmokeRunner(client=localstack.docker_client(), budget_seconds=60,
                                name_prefix="shipbot-test-own-smoke").run(ref, ports.Expectation(request.release_id))
    assert not verdict.passed
    assert verdict.reason == f"/about names neither the release {request.release_id} nor the commit None"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
