"""The ledger and the models container with Entra ID auth, as the wiring builds them in Azure mode
(credentials.blob_container + a TokenCredential), against a real peer: an Azurite blob service started here
with HTTPS and `--oauth basic`, which checks every bearer token's audience, issuer and lifetime (not its
signature: that is Entra ID's part, out of reach here). The shared Azurite of the stack runs plain HTTP,
where bearer tokens are refused by the SDK and by Azurite alike, hence one of our own."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shared import errors
from shared.adapters.azure import credentials
from shared.adapters.blob_ledger import BlobLedger
from shared.adapters.blob_models import BlobModels
from shared.releases import Release, Status
from tests.fakes import selfsigned
from tests.fakes.static_token import StaticToken

pytestmark = pytest.mark.integration
STATE = Path(os.environ.get("SHIPBOT_STATE", "/var/lib/shipbot"))


def entra_token(audience: str = "https://storage.azure.com") -> str:
    """An access token shaped as Entra ID issues them for storage (unsigned: Azurite checks claims only)."""
    def part(document: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"aud": audience, "iss": "https://sts.windows.net/00000000-0000-0000-0000-0000000000aa/",
              "iat": now - 60, "nbf": now - 60, "exp": now + 3600, "oid": "00000000-0000-0000-0000-0000000000bb",
              "sub": "shipbot-function-app", "tid": "00000000-0000-0000-0000-0000000000aa"}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture(scope="module")
def azurite_oauth(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(account URL, certificate file) of an Azurite blob service with HTTPS and OAuth, stopped afterwards."""
    binary = STATE / "node/bin/azurite-blob"
    if not binary.exists():
        pytest.fail(f"no {binary}: start the stack with `make stack` (scripts/local-stack.sh installs Azurite)")
    root = tmp_path_factory.mktemp("azurite-oauth")
    cert, key = selfsigned.make_certificate(root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(root / "log", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen([str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                    "--oauth", "basic", "--cert", str(cert), "--key", str(key),
                                    "--skipApiVersionCheck", "--disableTelemetry", "--location", str(root)],
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}/devstoreaccount1"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # Any answer means it is up.
                httpx.get(f"{url}?comp=list", verify=ssl.create_default_context(cafile=cert), timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(f"Azurite with OAuth did not answer: {(root / 'log').read_text()[-2000:]}")
            try:  # between polls, wait on the process: an exit fails at once
                process.wait(timeout=0.1)
                pytest.fail(f"Azurite with OAuth exited: {(root / 'log').read_text()[-2000:]}")
            except subprocess.TimeoutExpired:
                pass
        yield url, cert
    finally:
        process.terminate()
        process.wait(timeout=10)


def a_release(release_id: str) -> Release:
    return Release(id=release_id, created=datetime(2026, 3, 1, 12, 0, tzinfo=UTC), trigger="manual",
                   repository="shipbotacr.azurecr.io/shipbot/app", tag=release_id, status=Status.BUILDING)


def test_the_ledger_reads_and_writes_with_an_entra_id_token_for_storage(azurite_oauth):
    url, cert = azurite_oauth
    token = StaticToken(entra_token())
    ledger = BlobLedger(container=credentials.blob_container(url, "ledger", token, connection_verify=str(cert)))

    ledger.create_release(a_release("r-identity"))

    assert ledger.get_release("r-identity").repository == "shipbotacr.azurecr.io/shipbot/app"
    assert set(token.scopes) == {("https://storage.azure.com/.default",)}


def test_the_models_container_lists_with_an_entra_id_token(azurite_oauth):
    url, cert = azurite_oauth
    token = StaticToken(entra_token())
    container = credentials.blob_container(url, "models", token, connection_verify=str(cert))
    container.create_container()
    container.upload_blob("diabetes/1/model.joblib", b"not really a model")

    models = BlobModels(container=container).list_models()

    assert [(m.name, m.version) for m in models] == [("diabetes", "1")]


def test_a_token_for_another_audience_is_refused_and_the_error_carries_no_token(azurite_oauth):
    url, cert = azurite_oauth
    wrong = entra_token("https://management.azure.com")
    ledger = BlobLedger(container=credentials.blob_container(url, "ledger", StaticToken(wrong),
                                                             connection_verify=str(cert), retry_total=0))

    with pytest.raises(errors.TransientError, match="AuthenticationFailed|40[13]") as caught:
        ledger.get_release("r-identity")
    assert wrong not in str(caught.value) and wrong[:40] not in repr(caught.value.__cause__)
