"""The Builder port's contract, run against every adapter of it: the in-memory fake (finished by the test,
as a remote build service would finish), DockerBuilder's background builds on the local Docker engine,
from a real git repository and the sample model, pushed to the local registry, and AcrTasksBuilder on the fake
ARM endpoint of ACR Tasks (tests/fakes/arm_acr.py; context uploads to Azurite): `acr` with the fake's own
outcomes, `acr-docker` with the fake building on the Docker engine and pushing to the local registry."""

from __future__ import annotations

import importlib.util
import time
import uuid
from datetime import UTC, datetime

import pytest

from shared import buildcontext, ports
from shared.adapters.azure.acr_tasks_builder import AcrTasksBuilder
from shared.adapters.local.docker_builder import DockerBuilder
from shared.adapters.local.git_source import GitSource
from shared.adapters.local.registry import DistributionRegistry
from shared.releases import Model
from tests import localstack
from tests.fakes import acr_inputs, arm_acr

HAS_MEMORY = importlib.util.find_spec("shared.adapters.memory") is not None
WHEN = datetime(2026, 3, 1, tzinfo=UTC)


class DockerHarness:
    def __init__(self, tmp_path) -> None:
        self.client = localstack.docker_client()
        self.builder = DockerBuilder(client=self.client)
        repo, self.commit = localstack.app_repository(tmp_path)
        self.source = GitSource(repo=repo)
        folder = localstack.sample_model()
        self.model = Model("diabetes", "1", buildcontext.sha256_file(folder / "model.joblib"), "diabetes/1/model.joblib",
                           WHEN)
        self.models = localstack.FolderModels({("diabetes", "1"): folder})
        self.registry = DistributionRegistry(host=localstack.REGISTRY)

    def request(self, *, good: bool = True) -> ports.BuildRequest:
        model = self.model if good else Model("diabetes", "1", "0" * 64, self.model.blob_name, WHEN)
        return ports.BuildRequest(release_id=f"r-{uuid.uuid4().hex[:16]}", commit=self.commit, model=model,
                                  repository=f"{localstack.REGISTRY}/shipbot-test/builder-contract",
                                  tag=f"t-{uuid.uuid4().hex[:8]}")

    def new_builder(self):
        return DockerBuilder(client=self.client)

    def finish(self, build_id: str, *, good: bool = True) -> ports.Build:
        return self.builder.wait(build_id, timeout=600)

    def close(self) -> None:
        self.builder.close()


class MemoryHarness:
    def __init__(self, tmp_path) -> None:
        from shared.adapters import memory

        self.builder = memory.MemoryBuilder()
        self.registry = memory.MemoryRegistry()
        self.source, self.models = memory.MemorySource(), memory.MemoryModels()
        self.commit = self.source.commit("a" * 40, at=WHEN).sha
        self.model = self.models.put("diabetes", "1", {"model.joblib": b"model"}, uploaded=WHEN)

    def request(self, *, good: bool = True) -> ports.BuildRequest:
        return ports.BuildRequest(release_id=f"r-{uuid.uuid4().hex[:16]}", commit=self.commit, model=self.model,
                                  repository="registry.test/app", tag=f"t-{uuid.uuid4().hex[:8]}")

    def new_builder(self):
        from shared.adapters import memory

        return memory.MemoryBuilder()

    def finish(self, build_id: str, *, good: bool = True) -> ports.Build:
        if good:
            self.builder.succeed(build_id, self.registry)
        else:
            self.builder.fail(build_id, "the model file has another sha256")
        return self.builder.get_build(build_id)

    def close(self) -> None:
        pass


class AcrHarness:
    def __init__(self, tmp_path, *, docker: bool) -> None:
        self.fake = arm_acr.FakeAcr(login_server=localstack.REGISTRY if docker else "shipbotacr.azurecr.test")
        if docker:
            from tests.fakes import arm_acr_docker

            self.fake.outcome = arm_acr_docker.DockerExecutor(localstack.docker_client())
            repo, self.commit = localstack.app_repository(tmp_path)
            self.source = GitSource(repo=repo)
            folder = localstack.sample_model()
            self.model = Model("diabetes", "1", buildcontext.sha256_file(folder / "model.joblib"),
                               "diabetes/1/model.joblib", WHEN)
            self.models = localstack.FolderModels({("diabetes", "1"): folder})
            self.registry = DistributionRegistry(host=localstack.REGISTRY)
        else:
            self.models = acr_inputs.BytesModels(acr_inputs.sample_files())
            self.source, self.model, self.commit = acr_inputs.TreeSource(), self.models.model(), "c" * 40
            self.registry = self.fake  # the fake is the registry its runs push to
        self.builder = self.new_builder()

    def request(self, *, good: bool = True) -> ports.BuildRequest:
        model = self.model if good else Model("diabetes", "1", "0" * 64, self.model.blob_name, WHEN)
        return ports.BuildRequest(release_id=f"r-{uuid.uuid4().hex[:16]}", commit=self.commit, model=model,
                                  repository=f"{self.fake.login_server}/shipbot-test/builder-contract",
                                  tag=f"t-{uuid.uuid4().hex[:8]}")

    def new_builder(self):
        return AcrTasksBuilder(client=self.fake.client(), resource_group=arm_acr.RESOURCE_GROUP,
                               registry_name=arm_acr.REGISTRY, login_server=self.fake.login_server)

    def finish(self, build_id: str, *, good: bool = True) -> ports.Build:
        deadline = time.monotonic() + 600
        while (build := self.builder.get_build(build_id)).state is ports.BuildState.RUNNING:
            assert time.monotonic() < deadline, f"run {build_id} did not finish"
            time.sleep(0.2)
        return build

    def close(self) -> None:
        self.fake.close()


@pytest.fixture(params=[
    pytest.param("docker", marks=pytest.mark.integration),
    pytest.param("memory", marks=pytest.mark.skipif(not HAS_MEMORY, reason="shared/adapters/memory.py missing")),
    pytest.param("acr"),
    pytest.param("acr-docker", marks=pytest.mark.integration),
])
def harness(request, tmp_path):
    if request.param.startswith("acr"):
        harness = AcrHarness(tmp_path, docker=request.param == "acr-docker")
    else:
        harness = DockerHarness(tmp_path) if request.param == "docker" else MemoryHarness(tmp_path)
    yield harness
    harness.close()


def test_the_recipe_is_a_stable_nonempty_string(harness):
    assert isinstance(harness.builder.recipe, str) and harness.builder.recipe
    assert harness.new_builder().recipe == harness.builder.recipe


def test_begin_build_returns_an_id_while_the_build_goes_on(harness):
    build_id = harness.builder.begin_build(harness.request(), harness.source, harness.models)

    assert harness.builder.get_build(build_id).state in (ports.BuildState.RUNNING, ports.BuildState.SUCCEEDED)
    harness.finish(build_id)


def test_a_finished_build_reports_the_digest_that_the_registry_holds_under_the_tag(harness):
    request = harness.request()
    build_id = harness.builder.begin_build(request, harness.source, harness.models)

    build = harness.finish(build_id)

    assert build.state is ports.BuildState.SUCCEEDED, build.error
    assert build.digest and build.digest.startswith("sha256:")
    path = request.repository.split("/", 1)[1]  # the Registry port names repositories without the host
    assert harness.registry.get_image(path, request.tag).digest == build.digest


def test_a_failed_build_reports_failed_with_an_error(harness):
    build_id = harness.builder.begin_build(harness.request(good=False), harness.source, harness.models)

    build = harness.finish(build_id, good=False)

    assert build.state is ports.BuildState.FAILED
    assert build.error and build.digest is None


def test_a_build_id_the_builder_never_gave_is_unknown(harness):
    assert harness.builder.get_build("never-started").state is ports.BuildState.UNKNOWN
