"""The SmokeRunner port's contract, run against every adapter of it: the in-memory fake, DockerSmokeRunner
on the local Docker engine (with release images built by tests/localstack.py), and AcrTaskSmokeRunner on the
fake ARM endpoint of ACR Tasks (tests/fakes/arm_acr.py; logs in Azurite): `acr` with runs whose logs the test
scripts, `acr-docker` with the fake running the task on the Docker engine against the release images."""

from __future__ import annotations

import importlib.util
import json

import pytest

from shared import ports
from shared.adapters.azure import acr_runs
from shared.adapters.azure.acr_task_smoke import AcrTaskSmokeRunner
from shared.adapters.local.smoke import DockerSmokeRunner
from tests import localstack
from tests.fakes import arm_acr

HAS_MEMORY = importlib.util.find_spec("shared.adapters.memory") is not None


class DockerHarness:
    def __init__(self) -> None:
        self.runner = DockerSmokeRunner(client=localstack.docker_client(), budget_seconds=90)

    def passing(self) -> tuple[str, ports.Expectation]:
        image = localstack.release_image("good")
        return image.ref, ports.Expectation(image.release_id, model_sha256=image.model_sha256, commit=image.commit)

    def failing(self) -> tuple[str, ports.Expectation]:
        image = localstack.release_image("good")
        return image.ref, ports.Expectation("r-not-this-one")


class MemoryHarness:
    def __init__(self) -> None:
        from shared.adapters import memory

        self.runner = memory.MemorySmokeRunner()

    def passing(self) -> tuple[str, ports.Expectation]:
        return "registry.test/app@sha256:" + "1" * 64, ports.Expectation("r-1")

    def failing(self) -> tuple[str, ports.Expectation]:
        ref = "registry.test/app@sha256:" + "2" * 64
        self.runner.failures[ref] = "/version reports release r-1, expected r-2"
        return ref, ports.Expectation("r-2")


class AcrHarness:
    def __init__(self, *, docker: bool) -> None:
        self.docker = docker
        self.fake = arm_acr.FakeAcr(login_server=localstack.REGISTRY if docker else "shipbotacr.azurecr.test")
        if docker:
            from tests.fakes import arm_acr_docker

            self.fake.outcome = arm_acr_docker.DockerExecutor(localstack.docker_client())
        self.runner = AcrTaskSmokeRunner(client=self.fake.client(), resource_group=arm_acr.RESOURCE_GROUP,
                                         registry_name=arm_acr.REGISTRY, budget_seconds=90, poll_seconds=0.2)

    def passing(self) -> tuple[str, ports.Expectation]:
        if self.docker:
            image = localstack.release_image("good")
            return image.ref, ports.Expectation(image.release_id, model_sha256=image.model_sha256, commit=image.commit)
        self.fake.outcome = arm_acr.finish(acr_runs.SUCCEEDED, log=_verdict_line(True, ""))
        return "shipbotacr.azurecr.test/app@sha256:" + "1" * 64, ports.Expectation("r-1")

    def failing(self) -> tuple[str, ports.Expectation]:
        if self.docker:
            return localstack.release_image("good").ref, ports.Expectation("r-not-this-one")
        reason = "/version reports release r-1, expected r-2"
        self.fake.outcome = arm_acr.finish(acr_runs.FAILED, log=_verdict_line(False, reason),
                                           error="failed during run, err: exit status 1")
        return "shipbotacr.azurecr.test/app@sha256:" + "2" * 64, ports.Expectation("r-2")

    def close(self) -> None:
        self.fake.close()


def _verdict_line(passed: bool, reason: str) -> str:
    """What the check step prints (shared/adapters/azure/acr_smoke_check.py)."""
    return "SHIPBOT-SMOKE " + json.dumps({"passed": passed, "reason": reason, "steps": [["ready", 1.0]]}) + "\n"


@pytest.fixture(params=[
    pytest.param("docker", marks=pytest.mark.integration),
    pytest.param("memory", marks=pytest.mark.skipif(not HAS_MEMORY, reason="shared/adapters/memory.py missing")),
    pytest.param("acr"),
    pytest.param("acr-docker", marks=pytest.mark.integration),
])
def harness(request):
    if request.param.startswith("acr"):
        harness = AcrHarness(docker=request.param == "acr-docker")
        yield harness
        harness.close()
    else:
        yield DockerHarness() if request.param == "docker" else MemoryHarness()


def test_a_good_image_passes_with_no_reason(harness):
    ref, expected = harness.passing()

    verdict = harness.runner.run(ref, expected)

    assert (verdict.passed, verdict.reason) == (True, "")


def test_an_image_that_does_not_meet_the_expectation_fails_with_a_reason(harness):
    ref, expected = harness.failing()

    verdict = harness.runner.run(ref, expected)

    assert verdict.passed is False
    assert verdict.reason
