"""The Registry port's contract, run against every adapter of it: the in-memory fake, DistributionRegistry and
AcrRegistry (anonymous, as it reads any OCI registry) on the local distribution registry (images pushed there
by the real Docker engine)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import uuid

import pytest

from shared import errors
from shared.adapters.azure.acr_registry import AcrRegistry
from shared.adapters.local.registry import DistributionRegistry
from tests import localstack

HAS_MEMORY = importlib.util.find_spec("shared.adapters.memory") is not None
LABELS = {"dev.shipbot.release.id": "r-0123456789abcdef", "org.opencontainers.image.revision": "a" * 40}


class DistributionHarness:
    name = "distribution"
    repository = "shipbot-test/registry-contract"

    def __init__(self) -> None:
        self.client = localstack.docker_client()
        self.registry = DistributionRegistry(host=localstack.REGISTRY)

    def push(self, tag: str, labels: dict[str, str]) -> str:
        """A small image (the base image plus labels) built and pushed by the Docker engine."""
        full = f"{localstack.REGISTRY}/{self.repository}"
        dockerfile = io.BytesIO(b"FROM python:3.11-slim\n")
        self.client.images.build(fileobj=dockerfile, tag=f"{full}:{tag}", labels=labels, rm=True)
        digest = None
        for event in self.client.api.push(full, tag=tag, stream=True, decode=True):
            assert "error" not in event, event
            digest = event.get("aux", {}).get("Digest", digest)
        assert digest
        return digest


class AcrHarness(DistributionHarness):
    """AcrRegistry without a credential, over plain HTTP: the OCI calls it makes are the ones ACR answers."""

    name = "acr"

    def __init__(self) -> None:
        super().__init__()
        self.registry = AcrRegistry(host=localstack.REGISTRY, scheme="http")


class MemoryHarness:
    name = "memory"
    repository = "shipbot-test/registry-contract"

    def __init__(self) -> None:
        from shared.adapters import memory

        self.registry = memory.MemoryRegistry()

    def push(self, tag: str, labels: dict[str, str]) -> str:
        digest = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
        self.registry.push(self.repository, tag, digest, labels=labels)
        return digest


@pytest.fixture(params=[
    pytest.param("distribution", marks=pytest.mark.integration),
    pytest.param("acr", marks=pytest.mark.integration),
    pytest.param("memory", marks=pytest.mark.skipif(not HAS_MEMORY, reason="shared/adapters/memory.py missing")),
])
def harness(request):
    return {"distribution": DistributionHarness, "acr": AcrHarness, "memory": MemoryHarness}[request.param]()


def test_an_image_is_found_by_tag_and_by_digest_with_its_labels(harness):
    tag = f"t-{uuid.uuid4().hex[:8]}"
    digest = harness.push(tag, LABELS)

    by_tag = harness.registry.get_image(harness.repository, tag)
    by_digest = harness.registry.get_image(harness.repository, digest)

    assert by_tag == by_digest
    assert by_tag.digest == digest
    assert {k: by_tag.labels.get(k) for k in LABELS} == LABELS


def test_the_image_names_its_repository_with_the_registry_host(harness):
    tag = f"t-{uuid.uuid4().hex[:8]}"
    harness.push(tag, LABELS)

    image = harness.registry.get_image(harness.repository, tag)

    if harness.name == "memory" and image.repository == harness.repository:
        pytest.xfail("MemoryRegistry names the repository without its host; Release.repository includes it")
    assert image.repository == f"{harness.registry.host}/{harness.repository}"


@pytest.mark.parametrize("reference", ["no-such-tag", "sha256:" + "0" * 64])
def test_a_missing_tag_or_digest_is_not_found(harness, reference):
    harness.push(f"t-{uuid.uuid4().hex[:8]}", LABELS)

    with pytest.raises(errors.NotFound):
        harness.registry.get_image(harness.repository, reference)


def test_a_missing_repository_is_not_found(harness):
    with pytest.raises(errors.NotFound):
        harness.registry.get_image(f"shipbot-test/nothing-{uuid.uuid4().hex[:8]}", "latest")
