"""App Service's managed identity endpoint (api-version 2019-08-01), as a Function App with an identity sees it:
GET {IDENTITY_ENDPOINT}?resource=...&api-version=...[&client_id=...] with the header X-IDENTITY-HEADER, answering
{"access_token", "expires_on", "resource", "token_type", "client_id"}. DefaultAzureCredential finds it through
exactly the two variables App Service sets, so the real azure-identity code path runs.

Tokens are `token-for-<client id>` (`token-for-system` for the system-assigned identity); requests are recorded in
`seen` as (path, query, header).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

SECRET = "identity-header-secret"
# What would make DefaultAzureCredential pick another credential before the managed identity.
OTHER_CREDENTIALS = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                     "AZURE_USERNAME", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_TOKEN_CREDENTIALS", "MSI_ENDPOINT",
                     "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT")
SYSTEM_TOKEN = "token-for-system"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.seen.append((url.path, query, self.headers.get("X-IDENTITY-HEADER")))
        if self.headers.get("X-IDENTITY-HEADER") != SECRET:
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


class IdentityEndpoint:
    """`with IdentityEndpoint() as identity:` then apply `identity.environment` (set) and OTHER_CREDENTIALS
    (unset) to the process, e.g. with pytest's monkeypatch."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.seen = []
        self.seen: list[tuple[str, dict[str, str], str | None]] = self._server.seen
        self.environment = {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{self._server.server_address[1]}/msi/token",
                            "IDENTITY_HEADER": SECRET}
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def use(monkeypatch, identity: IdentityEndpoint) -> None:
    """Make this process look like a Function App with a managed identity, served by `identity`."""
    for name in OTHER_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    for name, value in identity.environment.items():
        monkeypatch.setenv(name, value)
