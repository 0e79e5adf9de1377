"""DistributionRegistry on the local registry: what the contract suite cannot say (a release image's labels,
multi-platform indexes, a registry that does not answer)."""

from __future__ import annotations

import socket

import httpx
import pytest
from azure.containerregistry import ContainerRegistryClient

from shared import errors
from shared.adapters.local.registry import DistributionRegistry
from tests import localstack

pytestmark = pytest.mark.integration
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def test_a_release_image_reports_the_labels_that_its_build_set():
    image = localstack.release_image("good")
    registry = DistributionRegistry(host=localstack.REGISTRY)

    found = registry.get_image(localstack.REPOSITORY, image.tag)

    assert found.repository == f"{localstack.REGISTRY}/{localstack.REPOSITORY}"
    assert found.digest == image.digest
    assert found.labels["dev.shipbot.release.id"] == image.release_id
    assert found.labels["dev.shipbot.model.sha256"] == image.model_sha256
    assert found.labels["org.opencontainers.image.revision"] == image.commit
    assert registry.get_image(f"{localstack.REGISTRY}/{localstack.REPOSITORY}", image.digest) == found


def test_a_multi_platform_index_is_read_through_its_linux_amd64_image_and_keeps_its_own_digest():
    image = localstack.release_image("good")
    client = ContainerRegistryClient(f"http://{localstack.REGISTRY}", None)
    manifest = httpx.get(f"http://{localstack.REGISTRY}/v2/{localstack.REPOSITORY}/manifests/{image.digest}",
                         headers={"Accept": MANIFEST_TYPES})
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": manifest.headers["Content-Type"], "digest": image.digest, "size": len(manifest.content),
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    tag = f"index-{localstack.SESSION}"
    index_digest = client.set_manifest(localstack.REPOSITORY, index, tag=tag, media_type=INDEX, enforce_https=False)

    found = DistributionRegistry(host=localstack.REGISTRY).get_image(localstack.REPOSITORY, tag)

    assert found.digest == index_digest != image.digest
    assert found.labels["dev.shipbot.release.id"] == image.release_id


def test_a_registry_that_does_not_answer_is_a_transient_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        registry = DistributionRegistry(host=f"127.0.0.1:{port}")
        with pytest.raises(errors.TransientError, match="did not answer"):
            registry.get_image("shipbot/app", "latest")


@pytest.mark.parametrize(("repository", "reference"), [
    ("Shipbot/App", "latest"), ("shipbot/app", "-rm"), ("shipbot/app", "sha256:short"), ("../x", "latest"),
])
def test_names_the_distribution_grammar_refuses_are_not_found_without_a_request(repository, reference):
    registry = DistributionRegistry(host="127.0.0.1:9")  # nothing listens there: a request would be transient
    with pytest.raises(errors.NotFound, match="not a valid"):
        registry.get_image(repository, reference)
