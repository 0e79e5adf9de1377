"""DockerBuilder's background face (ports.Builder) on the real engine and registry: the image carries what the
request says, failures keep their reason and log tail, and no temporary directory outlives a build."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime

import pytest

from shared import buildcontext, ports
from shared.adapters.local.docker_builder import DockerBuilder
from shared.adapters.local.git_source import GitSource
from shared.adapters.local.registry import DistributionRegistry
from shared.releases import Model
from tests import localstack

pytestmark = pytest.mark.integration
REPOSITORY = "shipbot-test/builder"


def request_for(commit: str, model: Model) -> ports.BuildRequest:
    return ports.BuildRequest(release_id=f"r-{uuid.uuid4().hex[:16]}", commit=commit, model=model,
                              repository=f"{localstack.REGISTRY}/{REPOSITORY}", tag=f"t-{uuid.uuid4().hex[:8]}",
                              source_url="https://git.example/team/app")


@pytest.fixture
def model_inputs():
    folder = localstack.sample_model()
    model = Model("diabetes", "7", buildcontext.sha256_file(folder / "model.joblib"), "diabetes/7/model.joblib",
                  datetime(2026, 3, 1, tzinfo=UTC))
    return model, localstack.FolderModels({("diabetes", "7"): folder})


@pytest.fixture
def builder(tmp_path):
    builder = DockerBuilder(client=localstack.docker_client(), log_dir=tmp_path / "logs")
    yield builder
    builder.close()


def test_a_background_build_pushes_an_image_labelled_from_the_request(builder, model_inputs, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    repo, commit = localstack.app_repository(tmp_path)
    model, models = model_inputs
    request = request_for(commit, model)

    build = builder.wait(builder.begin_build(request, GitSource(repo=repo), models), timeout=600)

    assert build.state is ports.BuildState.SUCCEEDED, build.error
    assert [name for name, _ in build.steps] == ["fetch", "build", "push"]
    image = DistributionRegistry(host=localstack.REGISTRY).get_image(REPOSITORY, build.digest)
    assert {k: image.labels[k] for k in ("dev.shipbot.release.id", "dev.shipbot.model.name",
                                          "dev.shipbot.model.version", "dev.shipbot.model.sha256",
                                          "org.opencontainers.image.revision", "org.opencontainers.image.source")} == {
        "dev.shipbot.release.id": request.release_id, "dev.shipbot.model.name": "diabetes",
        "dev.shipbot.model.version": "7", "dev.shipbot.model.sha256": model.sha256,
        "org.opencontainers.image.revision": commit, "org.opencontainers.image.source": "https://git.example/team/app"}
    assert list((tmp_path / "scratch").iterdir()) == []  # the source tree and model copies are gone


def test_a_dockerfile_that_fails_gives_failed_with_the_log_tail_kept(builder, model_inputs, tmp_path):
    repo, commit = localstack.app_repository(
        tmp_path, dockerfile="ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\nRUN echo broken-step-output && false\n")
    model, models = model_inputs

    build = builder.wait(builder.begin_build(request_for(commit, model), GitSource(repo=repo), models), timeout=600)

    assert build.state is ports.BuildState.FAILED
    assert build.error.startswith("docker build of ")
    assert "the build log ends: " in build.error and "broken-step-output" in build.error  # in the release's reason
    assert "broken-step-output" in builder.log_tail(build.build_id)
    assert build.log_url.startswith("file://")
    assert "broken-step-output" in (tmp_path / "logs" / f"{build.build_id}.log").read_text()


def test_a_model_file_that_is_not_the_releases_model_is_refused(builder, model_inputs, tmp_path):
    repo, commit = localstack.app_repository(tmp_path)
    model, models = model_inputs
    other = Model(model.name, model.version, "0" * 64, model.blob_name, model.uploaded)

    build = builder.wait(builder.begin_build(request_for(commit, other), GitSource(repo=repo), models), timeout=600)

    assert build.state is ports.BuildState.FAILED
    assert "the release expects " + "0" * 64 in build.error


def test_a_commit_the_source_does_not_have_fails_the_build(builder, model_inputs, tmp_path):
    repo, _ = localstack.app_repository(tmp_path)
    model, models = model_inputs

    build = builder.wait(builder.begin_build(request_for("f" * 40, model), GitSource(repo=repo), models), timeout=60)

    assert build.state is ports.BuildState.FAILED
    assert build.error == f"no commit {'f' * 40}"


def test_the_recipe_names_the_base_image_and_the_dockerfile():
    assert DockerBuilder(client=localstack.docker_client(), base_image="python:3.11-slim").recipe == \
        "docker:python:3.11-slim:model_api/Dockerfile"
