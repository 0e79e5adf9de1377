"""A fake of the one ARM operation KubernetesDeployer's AKS path calls: POST .../managedClusters/{name}/
listClusterUserCredential, over HTTPS on 127.0.0.1 (azure-core sends bearer tokens over TLS only), answering
the wire shape of azure.mgmt.containerservice's CredentialResults: {"kubeconfigs": [{"name": "clusterUser",
"value": <base64 kubeconfig>}]}. Unknown clusters answer ARM's 404 error document; a wrong token, 401.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from tests.fakes.kube_apiserver import self_signed_cert

CREDENTIALS = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.ContainerService/"
                         r"managedClusters/([^/]+)/listClusterUserCredential$", re.IGNORECASE)


class FakeArm:
    def __init__(self, *, token: str = "arm-token") -> None:
        self.token = token
        self.kubeconfigs: dict[tuple[str, str, str], str] = {}  # (subscription, group, cluster) -> kubeconfig
        self.requests: list[dict[str, str]] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-arm-")
        cert, key, _ = self_signed_cert(Path(self._tmp.name))
        self.ca_file = str(cert)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.arm = self  # type: ignore[attr-defined]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._tmp.cleanup()

    def answer(self, handler: _Handler) -> tuple[int, dict[str, Any]]:
        path, _, query = handler.path.partition("?")
        self.requests.append({"method": handler.command, "path": path, "query": query,
                              "authorization": handler.headers.get("Authorization", "")})
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}}
        match = CREDENTIALS.match(path)
        if handler.command != "POST" or not match or "api-version=" not in query:
            return 404, {"error": {"code": "NotFound", "message": "no such operation"}}
        kubeconfig = self.kubeconfigs.get((match[1], match[2], match[3]))
        if kubeconfig is None:
            return 404, {"error": {"code": "ResourceNotFound", "message": f"The Resource "
                                   f"'Microsoft.ContainerService/managedClusters/{match[3]}' under resource group "
                                   f"'{match[2]}' was not found."}}
        value = base64.b64encode(kubeconfig.encode()).decode()
        return 200, {"kubeconfigs": [{"name": "clusterUser", "value": value}]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        code, body = self.server.arm.answer(self)  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass
