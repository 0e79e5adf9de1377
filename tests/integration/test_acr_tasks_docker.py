"""AcrTasksBuilder and AcrTaskSmokeRunner end to end on the local stack: the fake ARM endpoint of ACR Tasks
(tests/fakes/arm_acr.py) hands the runs to an executor that does what ACR's agent would, on the real Docker
engine (tests/fakes/arm_acr_docker.py): it builds the uploaded context and pushes to the local registry, and
runs the smoke task's YAML, so the build context, the build args, the task YAML and the check script meet a
real engine, a real registry and real release images. What stays fake is ARM and ACR's agent itself."""

from __future__ import annotations

import datetime as dt
import shlex
import shutil
import time
import uuid
from pathlib import Path

import pytest

from shared import buildcontext, contract, errors, ports
from shared.adapters.azure.acr_task_smoke import AcrTaskSmokeRunner
from shared.adapters.azure.acr_tasks_builder import AcrTasksBuilder
from shared.adapters.local.git_source import GitSource
from shared.adapters.local.registry import DistributionRegistry
from shared.releases import Model
from tests import localstack
from tests.fakes import arm_acr, arm_acr_docker

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake():
    with arm_acr.FakeAcr(login_server=localstack.REGISTRY) as fake:
        fake.outcome = arm_acr_docker.DockerExecutor(localstack.docker_client())
        yield fake


def smoke_runner(fake: arm_acr.FakeAcr) -> AcrTaskSmokeRunner:
    return AcrTaskSmokeRunner(client=fake.client(), resource_group=arm_acr.RESOURCE_GROUP,
                              registry_name=arm_acr.REGISTRY, budget_seconds=90, poll_seconds=0.2,
                              registry=DistributionRegistry(host=localstack.REGISTRY), check_image="python:3.11-slim")


def build(fake: arm_acr.FakeAcr, tmp_path, *, dockerfile: str | None = None,
          app: Path | None = None) -> tuple[ports.Build, ports.BuildRequest]:
    """Builds with AcrTasksBuilder: this checkout's model_api (or its Dockerfile replaced), or the app at `app`."""
    if app is not None:
        repo = tmp_path / "app"
        shutil.copytree(app, repo)
        commit = localstack.commit_tree(repo)
    else:
        repo, commit = localstack.app_repository(tmp_path, dockerfile=dockerfile)
    folder = localstack.sample_model()
    model = Model("diabetes", "1", buildcontext.sha256_file(folder / "model.joblib"), "diabetes/1/model.joblib",
                  dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    builder = AcrTasksBuilder(client=fake.client(), resource_group=arm_acr.RESOURCE_GROUP,
                              registry_name=arm_acr.REGISTRY, login_server=fake.login_server)
    request = ports.BuildRequest(release_id=f"r-acr-{uuid.uuid4().hex[:12]}", commit=commit, model=model,
                                 repository=f"{localstack.REGISTRY}/shipbot-test/acr-tasks", tag=f"t-{uuid.uuid4().hex[:8]}",
                                 source_url="file:///app")
    build_id = builder.begin_build(request, GitSource(repo=repo), localstack.FolderModels({("diabetes", "1"): folder}))
    deadline = time.monotonic() + 600
    while (result := builder.get_build(build_id)).state is ports.BuildState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return result, request


def test_an_image_acr_tasks_built_carries_the_release_labels_and_passes_the_acr_smoke_test(fake, tmp_path):
    built, request = build(fake, tmp_path)
    assert built.state is ports.BuildState.SUCCEEDED, built.error

    image = DistributionRegistry(host=localstack.REGISTRY).get_image("shipbot-test/acr-tasks", request.tag)
    assert image.digest == built.digest
    assert image.labels["org.opencontainers.image.revision"] == request.commit
    assert image.labels["dev.shipbot.model.sha256"] == request.model.sha256
    assert image.labels["dev.shipbot.release.id"] == request.release_id

    verdict = smoke_runner(fake).run(f"{request.repository}@{built.digest}", ports.Expectation(
        request.release_id, model_sha256=request.model.sha256, commit=request.commit))
    assert (verdict.passed, verdict.reason) == (True, "")
    assert [name for name, _ in verdict.steps] == ["queue", "ready", "version", "score"]


def test_the_flask_sample_built_by_acr_tasks_passes_the_acr_smoke_test_through_its_own_contract(fake, tmp_path):
    built, request = build(fake, tmp_path, app=ROOT / "samples" / "flask-app")
    assert built.state is ports.BuildState.SUCCEEDED, built.error
    assert fake.last_run().kind == "EncodedTaskRunRequest"  # a build step with ShipBot's labels, then a push

    image = DistributionRegistry(host=localstack.REGISTRY).get_image("shipbot-test/acr-tasks", request.tag)
    assert image.digest == built.digest and image.labels["dev.shipbot.release.id"] == request.release_id
    smoke = contract.Contract.of_labels(image.labels)
    assert (smoke.port, smoke.ready_path, smoke.identity_path) == (5000, "/healthcheck", "/about")

    ref = f"{request.repository}@{built.digest}"
    verdict = smoke_runner(fake).run(ref, ports.Expectation(request.release_id, commit=request.commit))
    assert (verdict.passed, verdict.reason) == (True, "")
    assert shlex.split(fake.last_run().task["steps"][1]["cmd"])[0] == "python:3.11-slim"  # ShipBot's check image

    verdict = smoke_runner(fake).run(ref, ports.Expectation("r-another", commit="0" * 40))
    assert verdict.reason == f"/about names neither the release r-another nor the commit {'0' * 40}"


def test_a_dockerfile_that_fails_makes_a_failed_build_with_the_logs_last_lines(fake, tmp_path):
    built, _ = build(fake, tmp_path, dockerfile="FROM python:3.11-slim\nRUN echo 'no wheel for you' && exit 3\n")

    assert built.state is ports.BuildState.FAILED and built.digest is None
    assert "run cf1 failed: failed during run, err: exit status 1" in built.error
    assert "returned a non-zero code: 3" in built.error
    assert built.log_url.endswith("/cf1/rawtext.log") and "sig=" not in built.log_url


def test_an_image_that_scores_differently_from_its_sample_fails_at_the_score(fake):
    image = localstack.release_image("wrong-response")

    verdict = smoke_runner(fake).run(image.ref, ports.Expectation(image.release_id))

    assert not verdict.passed
    assert verdict.reason.startswith("score differs from sample-response.json at result[3]: ")


def test_an_image_whose_model_does_not_load_fails_at_readyz(fake):
    image = localstack.release_image("bad-model")

    verdict = smoke_runner(fake).run(image.ref, ports.Expectation(image.release_id))

    assert not verdict.passed
    assert verdict.reason.startswith("/readyz reports the model failed to load: ")
    assert [name for name, _ in verdict.steps] == ["queue", "ready"]


def test_an_image_that_is_not_in_the_registry_is_not_found(fake):
    with pytest.raises(errors.NotFound, match="not in the registry"):
        smoke_runner(fake).run(f"{localstack.REGISTRY}/{localstack.REPOSITORY}@sha256:{'0' * 64}",
                               ports.Expectation("r-x"))


def test_an_acr_smoke_run_scores_the_quality_gates_evaluation_set_inside_the_run(fake):
    """The set travels as the run's source, the check (in the release image) scores it against the container
    of the image by digest, and the answers come back through the run's log, in row order."""
    import json

    image = localstack.release_image("good")
    sample = json.loads((localstack.sample_model() / "sample-request.json").read_text())["data"]
    rows = (sample * 60)[:250]

    verdict = smoke_runner(fake).run(image.ref, ports.Expectation(image.release_id),
                                     evaluation=ports.Evaluation(rows, batch=64, seconds=60))

    assert verdict.passed, verdict.reason
    assert [name for name, _ in verdict.steps][-1] == "evaluate"
    assert len(verdict.predictions) == 250
    period = len(sample)
    assert list(verdict.predictions[:period]) == list(verdict.predictions[period:2 * period])
