"""AcrRegistry on real distribution registries: promotion by raw-manifest copy (within the local registry by
mount, across to a second registry started here by streaming), and by ARM import through the fake ARM endpoint
(tests/fakes/arm_registry.py) doing the import against the real registry. Every promotion is checked on the
target registry: same digest, same manifest bytes. What the Registry port promises is in tests/contract."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.containerregistry import ContainerRegistryClient

from shared import errors
from shared.adapters.azure.acr_import import ArmImageImport
from shared.adapters.azure.acr_registry import AcrRegistry
from tests import localstack
from tests.fakes import acr_auth, arm_registry, selfsigned
from tests.fakes.static_token import StaticToken

pytestmark = pytest.mark.integration
ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")
SOURCE = "shipbot-test/acr-source"
LABELS = {"dev.shipbot.release.id": "r-acr", "org.opencontainers.image.revision": "b" * 40}


def push(tag: str, labels: dict[str, str] = LABELS) -> str:
    """A small image (the base image plus labels) built and pushed by the Docker engine; its digest."""
    client = localstack.docker_client()
    full = f"{localstack.REGISTRY}/{SOURCE}"
    client.images.build(fileobj=io.BytesIO(b"FROM python:3.11-slim\n"), tag=f"{full}:{tag}", labels=labels, rm=True)
    digest = None
    for event in client.api.push(full, tag=tag, stream=True, decode=True):
        assert "error" not in event, event
        digest = event.get("aux", {}).get("Digest", digest)
    assert digest
    return digest


def manifest_bytes(host: str, repository: str, reference: str) -> bytes:
    response = httpx.get(f"http://{host}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
    response.raise_for_status()
    return response.content


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def image() -> tuple[str, str]:
    tag = unique("src")
    return tag, push(tag)


@pytest.fixture(scope="module")
def second_registry(tmp_path_factory) -> Iterator[str]:
    """Another distribution registry (Debian's docker-registry), on a free port, for cross-registry copies.
    `relativeurls`, as scripts/local-stack.sh sets it: azure-containerregistry appends an upload's Location to
    its endpoint, which works with ACR's relative Locations and breaks on absolute ones."""
    root = tmp_path_factory.mktemp("registry2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                      f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  relativeurls: true\n")
    with open(root / "log", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10  # it answers within a fraction of a second
        while True:
            try:
                httpx.get(f"http://{host}/v2/", timeout=0.5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the second registry did not answer: {(root / 'log').read_text()}")
            try:  # between polls, wait on the process: an exit (a bad config) fails at once
                process.wait(timeout=0.05)
                pytest.fail(f"the second registry exited: {(root / 'log').read_text()}")
            except subprocess.TimeoutExpired:
                pass
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_copy_within_the_registry_keeps_the_digest_and_the_manifest_bytes_and_moves_no_blob(image):
    tag, digest = image
    sent: list[tuple[str, str]] = []
    client = ContainerRegistryClient(f"http://{localstack.REGISTRY}", None, raw_request_hook=lambda r: sent.append(
        (r.http_request.method, r.http_request.url)))
    registry = AcrRegistry(host=localstack.REGISTRY, scheme="http", client=client)
    target = unique("shipbot-test/acr-prod")

    assert registry.promote(SOURCE, digest, target_repository=target, tag="r-acr") == digest

    assert any(method == "POST" and "mount=" in url for method, url in sent)
    assert not [url for method, url in sent if method in ("PATCH", "PUT") and "/blobs/uploads/" in url]

    promoted = registry.get_image(target, "r-acr")
    assert promoted.digest == digest
    assert promoted.labels["dev.shipbot.release.id"] == "r-acr"
    assert manifest_bytes(localstack.REGISTRY, target, "r-acr") == manifest_bytes(localstack.REGISTRY, SOURCE, tag)


def test_promoting_twice_is_a_no_op_and_a_tag_on_another_digest_moves_only_with_force(image):
    _, digest = image
    other = push(unique("other"), {**LABELS, "dev.shipbot.release.id": "r-other"})
    registry = AcrRegistry(host=f"{localstack.REGISTRY}", scheme="http")
    target = unique("shipbot-test/acr-prod")
    registry.promote(SOURCE, digest, target_repository=target, tag="production")

    assert registry.promote(f"{localstack.REGISTRY}/{SOURCE}", digest, target_repository=target,
                            tag="production") == digest
    with pytest.raises(errors.Refused, match="force"):
        registry.promote(SOURCE, other, target_repository=target, tag="production")
    assert registry.get_image(target, "production").digest == digest

    registry.promote(SOURCE, other, target_repository=target, tag="production", force=True)
    assert registry.get_image(target, "production").digest == other


def test_a_multi_platform_index_is_copied_with_its_children_under_its_own_digest(image):
    _, digest = image
    client = ContainerRegistryClient(f"http://{localstack.REGISTRY}", None)
    child = manifest_bytes(localstack.REGISTRY, SOURCE, digest)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": digest, "size": len(child),
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    index_digest = client.set_manifest(SOURCE, index, tag=unique("index"), media_type=index["mediaType"],
                                       enforce_https=False)
    registry = AcrRegistry(host=localstack.REGISTRY, scheme="http")
    target = unique("shipbot-test/acr-prod")

    registry.promote(SOURCE, index_digest, target_repository=target, tag="r-index")

    found = registry.get_image(target, "r-index")
    assert found.digest == index_digest
    assert found.labels["dev.shipbot.release.id"] == "r-acr"  # read through the copied child
    assert manifest_bytes(localstack.REGISTRY, target, digest) == child


def test_a_copy_from_another_registry_streams_every_blob_and_keeps_the_digest(image, second_registry):
    tag, digest = image
    sent: list[str] = []
    client = ContainerRegistryClient(f"http://{second_registry}", None,
                                     raw_request_hook=lambda r: sent.append(r.http_request.method))
    registry = AcrRegistry(host=second_registry, scheme="http", client=client)

    promoted = registry.promote(SOURCE, digest, target_repository="shipbot/app", tag="r-acr",
                                source_host=localstack.REGISTRY)

    assert promoted == digest
    assert registry.get_image("shipbot/app", "r-acr").digest == digest
    assert manifest_bytes(second_registry, "shipbot/app", "r-acr") == manifest_bytes(localstack.REGISTRY, SOURCE, tag)
    assert sent.count("PATCH") > len(json.loads(manifest_bytes(second_registry, "shipbot/app", "r-acr"))["layers"])


def test_a_missing_source_image_is_not_found_and_nothing_is_tagged():
    registry = AcrRegistry(host=localstack.REGISTRY, scheme="http")
    target = unique("shipbot-test/acr-prod")

    with pytest.raises(errors.NotFound):
        registry.promote(SOURCE, "sha256:" + "0" * 64, target_repository=target, tag="r-none")
    with pytest.raises(errors.NotFound):
        registry.get_image(target, "r-none")


@pytest.fixture(params=["azure-asyncoperation", "location"])
def arm(request, tmp_path) -> Iterator[arm_registry.FakeArm]:
    """The fake ARM endpoint doing imports into the local registry, with either polling pattern."""
    certificate = selfsigned.make_certificate(tmp_path)
    state = arm_registry.FakeArm(token="arm-token", registries={"shipbotacr": localstack.REGISTRY}, polls=1,
                                 async_operation=request.param == "azure-asyncoperation")
    with selfsigned.https_server(arm_registry.ArmHandler, *certificate, arm=state) as server:
        state.importer = ArmImageImport(
            subscription_id="sub", resource_group="rg", registry_name="shipbotacr", credential=StaticToken("arm-token"),
            arm_endpoint=f"https://127.0.0.1:{server.server_address[1]}", polling_seconds=0,
            connection_verify=str(Path(certificate[0])))
        yield state


def test_an_arm_import_lands_the_digest_on_the_target_and_a_retry_imports_nothing(image, arm):
    tag, digest = image
    registry = AcrRegistry(host=localstack.REGISTRY, scheme="http", importer=arm.importer)
    target = unique("shipbot-test/acr-prod")

    assert registry.promote(SOURCE, digest, target_repository=target, tag="r-acr") == digest
    assert registry.promote(SOURCE, digest, target_repository=target, tag="r-acr") == digest

    assert registry.get_image(target, "r-acr").digest == digest
    assert manifest_bytes(localstack.REGISTRY, target, "r-acr") == manifest_bytes(localstack.REGISTRY, SOURCE, tag)
    posts = [body for method, _, _, body in arm.requests if method == "POST"]
    assert len(posts) == 1
    assert posts[0]["source"]["sourceImage"] == f"{SOURCE}@{digest}"
    assert posts[0]["mode"] == "NoForce"


def test_an_arm_import_over_a_tag_on_another_digest_is_refused_without_calling_arm(image, arm):
    _, digest = image
    registry = AcrRegistry(host=localstack.REGISTRY, scheme="http", importer=arm.importer)
    target = unique("shipbot-test/acr-prod")
    AcrRegistry(host=localstack.REGISTRY, scheme="http").promote(SOURCE, digest, target_repository=target, tag="p")
    other = push(unique("other"), {**LABELS, "dev.shipbot.release.id": "r-other"})

    with pytest.raises(errors.Refused):
        registry.promote(SOURCE, other, target_repository=target, tag="p")
    assert arm.requests == []

    registry.promote(SOURCE, other, target_repository=target, tag="p", force=True)
    assert registry.get_image(target, "p").digest == other
    assert [body["mode"] for method, _, _, body in arm.requests if method == "POST"] == ["Force"]


@pytest.fixture
def acr(tmp_path) -> Iterator[tuple[acr_auth.FakeAcr, str, str]]:
    """(state, login server, certificate file) of the fake ACR token exchange in front of the local registry."""
    certificate = selfsigned.make_certificate(tmp_path)
    state = acr_auth.FakeAcr(aad_token="aad-token", backend=localstack.REGISTRY)
    with selfsigned.https_server(acr_auth.AcrHandler, *certificate, acr=state) as server:
        yield state, f"127.0.0.1:{server.server_address[1]}", str(certificate[0])
    state.http.close()


def test_with_a_credential_the_entra_id_token_is_traded_for_acr_tokens_to_read_and_promote(image, acr):
    state, host, certificate = acr
    _, digest = image
    credential = StaticToken("aad-token")
    registry = AcrRegistry(host=host, credential=credential, connection_verify=certificate)
    target = unique("shipbot-test/acr-prod")

    found = registry.get_image(SOURCE, digest)
    registry.promote(f"{host}/{SOURCE}", digest, target_repository=f"{host}/{target}", tag="r-acr")

    assert (found.repository, found.digest) == (f"{host}/{SOURCE}", digest)
    assert found.labels["dev.shipbot.release.id"] == "r-acr"
    assert AcrRegistry(host=localstack.REGISTRY, scheme="http").get_image(target, "r-acr").digest == digest
    assert set(credential.scopes) == {("https://containerregistry.azure.net/.default",)}
    assert ("exchange", host) in state.exchanges
    assert ("token", f"repository:{target}:pull,push") in state.exchanges


def test_a_credential_acr_does_not_accept_is_a_permanent_error_without_the_token(image, acr):
    _, host, certificate = acr
    _, digest = image
    registry = AcrRegistry(host=host, credential=StaticToken("someone-else"), connection_verify=certificate,
                           retry_total=0)

    with pytest.raises(errors.PermanentError, match="denied") as caught:
        registry.get_image(SOURCE, digest)
    assert "someone-else" not in str(caught.value)
