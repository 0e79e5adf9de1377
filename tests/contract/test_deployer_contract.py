"""The Deployer port's contract, run against every adapter of it: the in-memory fake, DockerDeployer on
the local Docker engine (containers on free ports under a test-only name, never the real shipbot-<env>),
KubernetesDeployer over the fake Kubernetes API server (tests/fakes/kube_apiserver.py, real client, HTTPS),
and PromotingDeployer in front of DockerDeployer, promoting into the real local registry (AcrRegistry's
manifest copy) before each deploy: its answers must read as if there were no promotion."""

from __future__ import annotations

import importlib.util
import socket
import uuid

import pytest

from shared import ports
from shared.adapters.local.deployer import DockerDeployer
from tests import localstack

HAS_MEMORY = importlib.util.find_spec("shared.adapters.memory") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DockerHarness:
    def __init__(self) -> None:
        self.client = localstack.docker_client()
        self.prefix = f"shipbot-test-{uuid.uuid4().hex[:8]}"
        self.deployer = DockerDeployer(client=self.client, ports={"staging": free_port()}, verify_seconds=60,
                                       name_prefix=self.prefix, environment={"MODEL_API_WORKERS": "1"})

    def release(self, n: int) -> tuple[str, ports.Expectation]:
        image = localstack.release_image(("good", "wrong-response")[n])  # two images, two releases
        return image.ref, ports.Expectation(image.release_id)

    def broken(self) -> tuple[str, ports.Expectation]:
        image = localstack.release_image("bad-model")
        return image.ref, ports.Expectation(image.release_id)

    def close(self) -> None:
        for container in self.client.containers.list(all=True, filters={"name": self.prefix}):
            container.remove(force=True)


class PromotingHarness(DockerHarness):
    """The environment under test is the promoted one: every deploy first copies the image to a repository
    of its own (a fresh prefix per test, so the tags it makes are new), then runs it from there."""

    def __init__(self) -> None:
        from shared.adapters import promoting
        from shared.adapters.azure.acr_registry import AcrRegistry

        super().__init__()
        self.inner = self.deployer
        self.registry = AcrRegistry(host=localstack.REGISTRY, scheme="http")
        self.deployer = promoting.PromotingDeployer(self.inner, self.registry, environment="staging",
                                                    prefix=f"promoted-{uuid.uuid4().hex[:8]}")

    def close(self) -> None:
        super().close()
        self.registry.close()


class MemoryHarness:
    def __init__(self) -> None:
        from shared.adapters import memory

        self.deployer = memory.MemoryDeployer()

    def release(self, n: int) -> tuple[str, ports.Expectation]:
        return f"registry.test/app@sha256:{str(n) * 64}", ports.Expectation(f"r-{n}")

    def broken(self) -> tuple[str, ports.Expectation]:
        ref = "registry.test/app@sha256:" + "b" * 64
        self.deployer.broken[ref] = "did not become ready"
        return ref, ports.Expectation("r-broken")

    def close(self) -> None:
        pass


class KubernetesHarness:
    """A fake cluster whose staging Deployment infra creates (running a placeholder image) before the first
    release is deployed into it; a broken release never becomes available (ProgressDeadlineExceeded)."""

    def __init__(self) -> None:
        from shared.adapters.azure import kubernetes_deployer
        from tests.fakes.kube_apiserver import KubeApiServer

        self.api = KubeApiServer(tokens={"contract-token"}).__enter__()
        target = kubernetes_deployer.Target.parse("staging/app/model-api@app:80")
        self.deployer = kubernetes_deployer.KubernetesDeployer(api_client=self.api.api_client(),
                                                               targets={"staging": target}, verify_seconds=5)

    def release(self, n: int) -> tuple[str, ports.Expectation]:
        if ("staging", "app") not in self.api.deployments:  # what infra (Bicep, Helm) does once
            self.api.add_deployment("staging", "app", image="registry.test/placeholder:infra")
            self.api.add_service("staging", "app")
        ref = f"registry.test/app@sha256:{str(n) * 64}"
        self.api.versions[ref] = {"release_id": f"r-{n}"}
        return ref, ports.Expectation(f"r-{n}")

    def broken(self) -> tuple[str, ports.Expectation]:
        ref = "registry.test/app@sha256:" + "b" * 64
        self.api.behaviour[ref] = "never"
        return ref, ports.Expectation("r-broken")

    def close(self) -> None:
        self.api.__exit__(None, None, None)


@pytest.fixture(params=[
    pytest.param("docker", marks=pytest.mark.integration),
    pytest.param("memory", marks=pytest.mark.skipif(not HAS_MEMORY, reason="shared/adapters/memory.py missing")),
    "kubernetes",
    pytest.param("promoting-docker", marks=pytest.mark.integration),
])
def harness(request):
    harness = {"docker": DockerHarness, "memory": MemoryHarness, "kubernetes": KubernetesHarness,
               "promoting-docker": PromotingHarness}[request.param]()
    yield harness
    harness.close()


def test_an_environment_that_never_had_a_deploy_runs_nothing(harness):
    assert harness.deployer.get_running("staging") is None


def test_a_deploy_passes_and_the_environment_then_runs_that_ref(harness):
    ref, expected = harness.release(0)

    verdict = harness.deployer.deploy("staging", ref, expected)

    assert (verdict.passed, verdict.reason) == (True, "")
    assert harness.deployer.get_running("staging") == ref


def test_a_second_deploy_switches_the_environment_to_the_new_ref(harness):
    first, second = harness.release(0), harness.release(1)
    assert harness.deployer.deploy("staging", *first).passed

    verdict = harness.deployer.deploy("staging", *second)

    assert verdict.passed, verdict.reason
    assert harness.deployer.get_running("staging") == second[0]


def test_a_failed_deploy_leaves_the_environment_on_what_it_ran(harness):
    good = harness.release(0)
    assert harness.deployer.deploy("staging", *good).passed

    verdict = harness.deployer.deploy("staging", *harness.broken())

    assert verdict.passed is False and verdict.reason
    assert harness.deployer.get_running("staging") == good[0]


def test_the_url_of_an_environment_is_an_http_url(harness):
    assert harness.deployer.url("staging").startswith("http")
