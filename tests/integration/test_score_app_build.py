"""An Azure ML-style app (shipbot.toml [serve]: a score.py and its environment file, no Dockerfile) built by
DockerBuilder on the real engine around ShipBot's model_api, and smoke-tested as model_api images are."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shared import buildcontext, ports
from shared.adapters.local import containers
from shared.adapters.local.docker_builder import DockerBuilder
from shared.adapters.local.git_source import GitSource
from shared.adapters.local.smoke import DockerSmokeRunner
from shared.releases import Model
from tests import localstack

pytestmark = pytest.mark.integration
REPOSITORY = "shipbot-test/score-app"

SCORE = """\
import json, os

import joblib
import numpy


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.joblib"))


def run(raw_data):
    rows = numpy.array(json.loads(raw_data)["data"])
    return {"result": model.predict(rows).tolist(), "scored_by": "the app's score.py"}
"""
# Packages model_api's image already holds: pip finds them satisfied, so the test needs no package index.
ENVIRONMENT = """\
name: scoring
dependencies:
  - python=3.11
  - numpy
  - pip:
      - joblib
"""


def score_app(root: Path) -> tuple[Path, str]:
    repo = root / "score-app"
    (repo / "scoring").mkdir(parents=True)
    (repo / "scoring" / "score.py").write_text(SCORE)
    (repo / "conda_dependencies.yml").write_text(ENVIRONMENT)
    (repo / "shipbot.toml").write_text('[serve]\nentry_script = "scoring/score.py"\n'
                                       'requirements = "conda_dependencies.yml"\n')
    return repo, localstack.commit_tree(repo)


def test_a_score_py_app_is_built_around_model_api_and_passes_its_smoke_test(tmp_path):
    folder = localstack.sample_model()
    model = Model("diabetes", "9", buildcontext.sha256_file(folder / "model.joblib"), "diabetes/9/model.joblib",
                  datetime(2026, 3, 1, tzinfo=UTC))
    repo, commit = score_app(tmp_path)
    request = ports.BuildRequest(release_id=f"r-{uuid.uuid4().hex[:16]}", commit=commit, model=model,
                                 repository=f"{localstack.REGISTRY}/{REPOSITORY}", tag=f"t-{uuid.uuid4().hex[:8]}")
    builder = DockerBuilder(client=localstack.docker_client(), log_dir=tmp_path / "logs")
    try:
        build = builder.wait(builder.begin_build(request, GitSource(repo=repo),
                                                 localstack.FolderModels({("diabetes", "9"): folder})), timeout=900)
    finally:
        builder.close()
    assert build.state is ports.BuildState.SUCCEEDED, build.error
    ref = f"{request.repository}@{build.digest}"
    env = localstack.docker_client().containers.run(ref, ["sh", "-c", "echo $AZUREML_ENTRY_SCRIPT"], remove=True)
    assert env.decode().strip() == "/var/azureml-app/app/scoring/score.py"

    verdict = DockerSmokeRunner(client=localstack.docker_client(), budget_seconds=90,
                                name_prefix="shipbot-test-score-smoke").run(
        ref, ports.Expectation(request.release_id, model_sha256=model.sha256, commit=commit))
    assert (verdict.passed, verdict.reason) == (True, "")

    client = localstack.docker_client()
    container = containers.create_model_api(client, ref, name=f"shipbot-test-score-{uuid.uuid4().hex[:6]}",
                                            host_port=None, environment={"MODEL_API_WORKERS": "1"})
    try:
        container.start()
        url = f"http://127.0.0.1:{containers.host_port(container)}"
        assert containers.await_ready(container, url, deadline=time.monotonic() + 60, budget_seconds=60) == ""
        answer = httpx.post(f"{url}/score", json=json.loads((folder / "sample-request.json").read_text()), timeout=10)
        assert answer.json()["scored_by"] == "the app's score.py"  # the app's run(), not model_api's default
    finally:
        container.remove(force=True)
