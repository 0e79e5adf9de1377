"""An app with its own Dockerfile (shipbot.toml [build]) built by DockerBuilder on the real engine and registry:
the model lands at model_path, the SHIPBOT_* build args reach the Dockerfile that declares them, the image carries
ShipBot's labels, and a bad manifest fails the build with file, key and line, pushing nothing."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared import buildcontext, errors, ports
from shared.adapters.local.docker_builder import DockerBuilder
from shared.adapters.local.git_source import GitSource
from shared.adapters.local.registry import DistributionRegistry
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
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "app"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=localstack.GIT_ENV)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True,
                         env=localstack.GIT_ENV).stdout.strip()
    return repo, sha


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
