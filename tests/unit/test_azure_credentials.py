"""shared/adapters/azure/credentials.py: the storage URL check that keeps secrets out of Azure mode, and the
credential finding a managed identity the way it does in a Function App: App Service's identity endpoint
(IDENTITY_ENDPOINT + IDENTITY_HEADER), served here by a small local HTTP server that speaks its protocol."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared import errors
from shared.adapters.azure import credentials

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.mark.parametrize(("value", "expected"), [
    ("https://shipbot.blob.core.windows.net", "https://shipbot.blob.core.windows.net"),
    ("https://shipbot.blob.core.windows.net/", "https://shipbot.blob.core.windows.net"),
    (" https://shipbot.blob.core.chinacloudapi.cn ", "https://shipbot.blob.core.chinacloudapi.cn"),
    ("https://127.0.0.1:10000/devstoreaccount1", "https://127.0.0.1:10000/devstoreaccount1"),
])
def test_an_account_url_is_accepted_without_its_trailing_slash(value, expected):
    assert credentials.blob_account_url(value) == expected


@pytest.mark.parametrize(("value", "complaint"), [
    (f"DefaultEndpointsProtocol=https;AccountName=shipbot;AccountKey={KEY};EndpointSuffix=core.windows.net",
     "connection string"),
    (f"https://shipbot.blob.core.windows.net/?sv=2024-11-04&ss=b&sig={KEY[:43]}", "connection string, key or SAS"),
    ("http://shipbot.blob.core.windows.net", "https"),
    ("https://user:pw@shipbot.blob.core.windows.net", "user info"),
    ("https://shipbot.blob.core.windows.net/ledger/releases", "not a container"),
    ("shipbot.blob.core.windows.net", "https"),
    ("", "empty"),
])
def test_a_value_carrying_a_secret_or_not_naming_an_account_is_refused_without_being_quoted(value, complaint):
    with pytest.raises(errors.PermanentError, match=complaint) as caught:
        credentials.blob_account_url(value)
    assert KEY[:20] not in str(caught.value) and "pw@" not in str(caught.value)


def test_blob_container_builds_a_client_on_the_checked_url_with_the_credential():
    class Credential:
        def get_token(self, *scopes, **kwargs):
            raise AssertionError("no request is made")

    token = Credential()
    container = credentials.blob_container("https://shipbot.blob.core.windows.net/", "ledger", token)

    assert container.url == "https://shipbot.blob.core.windows.net/ledger"
    assert container.credential is token
    with pytest.raises(errors.PermanentError):
        credentials.blob_container(f"AccountName=x;AccountKey={KEY}", "ledger", token)


class IdentityEndpoint(BaseHTTPRequestHandler):
    """App Service's managed identity endpoint (api-version 2019-08-01), as a Function App sees it."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.seen.append((url.path, query, self.headers.get("X-IDENTITY-HEADER")))
        if self.headers.get("X-IDENTITY-HEADER") != self.server.secret:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"access_token": f"token-for-{query.get('client_id', 'system')}",
                           "expires_on": str(int(time.time()) + 3600), "resource": query["resource"],
                           "token_type": "Bearer", "client_id": query.get("client_id", "system")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def identity_endpoint(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), IdentityEndpoint)
    server.seen, server.secret = [], "identity-header-secret"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    # Exactly what App Service sets for a Function App with a managed identity; nothing that would make
    # DefaultAzureCredential pick another credential first.
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                 "AZURE_USERNAME", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_TOKEN_CREDENTIALS", "MSI_ENDPOINT",
                 "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", server.secret)
    yield server
    server.shutdown()
    server.server_close()


def test_the_credential_is_the_apps_user_assigned_identity_when_a_client_id_is_given(identity_endpoint):
    token = credentials.credential(managed_identity_client_id="1111-aaaa").get_token(
        "https://storage.azure.com/.default")

    assert token.token == "token-for-1111-aaaa"
    path, query, header = identity_endpoint.seen[-1]
    assert path == "/msi/token"
    assert query["client_id"] == "1111-aaaa"
    assert query["resource"] == "https://storage.azure.com"
    assert header == "identity-header-secret"


def test_without_a_client_id_the_credential_is_the_system_assigned_identity(identity_endpoint):
    token = credentials.credential().get_token("https://management.azure.com/.default")

    assert token.token == "token-for-system"
    assert "client_id" not in identity_endpoint.seen[-1][1]
