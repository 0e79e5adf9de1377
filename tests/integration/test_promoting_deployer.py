"""PromotingDeployer on the real stack: production runs a promoted copy of the image (same digest, its own
repository, tagged with the release id) from the local registry, while the engine keeps seeing the name it
knows; what cannot be promoted changes nothing."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from shared import errors, ports
from shared.adapters import promoting
from shared.adapters.azure.acr_registry import AcrRegistry
from shared.adapters.local.deployer import DockerDeployer
from tests import localstack

pytestmark = pytest.mark.integration
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def production():
    client = localstack.docker_client()
    name, prefix = f"shipbot-test-{uuid.uuid4().hex[:8]}", f"prod-{uuid.uuid4().hex[:8]}"
    inner = DockerDeployer(client=client, ports={"production": free_port()}, verify_seconds=60, name_prefix=name,
                           environment={"MODEL_API_WORKERS": "1"})
    registry = AcrRegistry(host=localstack.REGISTRY, scheme="http")
    yield promoting.PromotingDeployer(inner, registry, environment="production", prefix=prefix), client, name
    for container in client.containers.list(all=True, filters={"name": name}):
        container.remove(force=True)
    registry.close()


def test_production_runs_the_promoted_copy_and_reports_the_name_the_engine_knows(production):
    deployer, client, name = production
    image = localstack.release_image("good")

    verdict = deployer.deploy("production", image.ref, ports.Expectation(image.release_id))

    assert verdict.passed, verdict.reason
    assert verdict.steps[0][0] == "promote"
    promoted = f"{deployer.prefix}/{localstack.REPOSITORY}"
    manifest = httpx.head(f"http://{localstack.REGISTRY}/v2/{promoted}/manifests/{image.release_id}",
                          headers={"Accept": MANIFEST_TYPES})
    assert manifest.status_code == 200 and manifest.headers["Docker-Content-Digest"] == image.digest
    (container,) = client.containers.list(filters={"name": f"{name}-production"})
    assert container.attrs["Config"]["Image"] == f"{localstack.REGISTRY}/{promoted}@{image.digest}"
    assert deployer.get_running("production") == image.ref


def test_an_image_the_registry_does_not_have_is_not_promoted_and_production_keeps_what_it_ran(production):
    deployer, _, _ = production
    good = localstack.release_image("good")
    assert deployer.deploy("production", good.ref, ports.Expectation(good.release_id)).passed
    gone = f"{localstack.REGISTRY}/{localstack.REPOSITORY}@sha256:{'0' * 64}"

    verdict = deployer.deploy("production", gone, ports.Expectation("r-gone"))

    assert not verdict.passed and verdict.reason.startswith("not promoted:")
    assert deployer.get_running("production") == good.ref


def test_an_image_of_another_registry_cannot_be_promoted(production):
    deployer, _, _ = production

    with pytest.raises(errors.PermanentError, match="only those can be promoted"):
        deployer.deploy("production", f"elsewhere.example/app@sha256:{'1' * 64}", ports.Expectation("r-1"))
