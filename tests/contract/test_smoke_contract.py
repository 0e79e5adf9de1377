"""The SmokeRunner port's contract, run against every adapter of it: the in-memory fake and DockerSmokeRunner
on the local Docker engine (with release images built by tests/localstack.py)."""

from __future__ import annotations

import importlib.util

import pytest

from shared import ports
from shared.adapters.local.smoke import DockerSmokeRunner
from tests import localstack

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


@pytest.fixture(params=[
    pytest.param("docker", marks=pytest.mark.integration),
    pytest.param("memory", marks=pytest.mark.skipif(not HAS_MEMORY, reason="shared/adapters/memory.py missing")),
])
def harness(request):
    return DockerHarness() if request.param == "docker" else MemoryHarness()


def test_a_good_image_passes_with_no_reason(harness):
    ref, expected = harness.passing()

    verdict = harness.runner.run(ref, expected)

    assert (verdict.passed, verdict.reason) == (True, "")


def test_an_image_that_does_not_meet_the_expectation_fails_with_a_reason(harness):
    ref, expected = harness.failing()

    verdict = harness.runner.run(ref, expected)

    assert verdict.passed is False
    assert verdict.reason
