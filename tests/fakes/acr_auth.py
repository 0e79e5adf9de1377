"""A fake of ACR's data-plane authentication in front of a real distribution registry.

ACR answers an unauthenticated /v2/ call with 401 and a challenge; azure-containerregistry's challenge policy
then trades the caller's Entra ID token for an ACR refresh token and that for a scoped access token, and
retries. This speaks that protocol over HTTPS (tests/fakes/selfsigned.py), then forwards each authorised
/v2/ request unchanged to the real registry behind it (plain HTTP on loopback), so what is read and written
is real:

    any /v2/... without a valid ACR access token
        -> 401, WWW-Authenticate: Bearer realm="https://<host>/oauth2/token",service="<host>",
                                  scope="repository:<name>:pull,push"       (no scope for /v2/ itself)
    POST /oauth2/exchange?api-version=2021-07-01   form: grant_type=access_token, service, access_token
        -> 200 {"refresh_token"} when access_token is the expected Entra ID token, else 401
    POST /oauth2/token?api-version=2021-07-01      form: grant_type=refresh_token, service, scope, refresh_token
        -> 200 {"access_token"} for a refresh token this fake issued, else 401

Real ACR tokens are JWTs; these are opaque strings (the SDK reads a refresh token's `exp` only when it has
JWT form). Scopes are recorded, not enforced per repository. `server.acr.exchanges` counts the trades.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

import httpx

REPOSITORY_PATH = re.compile(r"/v2/(?P<name>.+?)/(?:manifests|blobs|tags)/")
FORWARDED_REQUEST_HEADERS = ("Accept", "Content-Type", "Range")
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Docker-Content-Digest", "Location", "Range", "Content-Range",
                              "Docker-Upload-UUID", "Docker-Distribution-Api-Version", "Accept-Ranges", "ETag")


class FakeAcr:
    def __init__(self, *, aad_token: str, backend: str) -> None:
        self.aad_token = aad_token
        self.backend = backend  # host:port of the real registry, plain HTTP
        self.refresh_tokens: set[str] = set()
        self.access_tokens: set[str] = set()
        self.exchanges: list[tuple[str, str]] = []  # ("exchange" | "token", service or scope)
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=60)


class AcrHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # self.server.acr is the FakeAcr (selfsigned.https_server sets it)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        acr: FakeAcr = self.server.acr
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if method == "POST" and url.path in ("/oauth2/exchange", "/oauth2/token"):
            return self._token(acr, url.path, dict(urllib.parse.parse_qsl(body.decode())))
        if not url.path.startswith("/v2/"):
            return self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such route"}]})
        authorization = self.headers.get("Authorization", "")
        with acr.lock:
            authorised = authorization.removeprefix("Bearer ") in acr.access_tokens
        if not authorised:
            host = self.headers["Host"]
            challenge = f'Bearer realm="https://{host}/oauth2/token",service="{host}"'
            if match := REPOSITORY_PATH.match(urllib.parse.unquote(url.path)):  # the SDK sends a/b as a%2Fb
                challenge += f',scope="repository:{match["name"]}:pull,push"'
            return self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                              {"WWW-Authenticate": challenge})
        headers = {name: self.headers[name] for name in FORWARDED_REQUEST_HEADERS if self.headers.get(name)}
        response = acr.http.request(method, f"http://{acr.backend}{self.path}", headers=headers, content=body or None)
        self.send_response(response.status_code)
        for name in FORWARDED_RESPONSE_HEADERS:
            if name in response.headers:
                self.send_header(name, response.headers[name])
        payload = b"" if method == "HEAD" else response.content
        self.send_header("Content-Length", response.headers.get("Content-Length", str(len(payload)))
                         if method == "HEAD" else str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _token(self, acr: FakeAcr, path: str, form: dict[str, str]) -> None:
        with acr.lock:
            if path == "/oauth2/exchange":
                acr.exchanges.append(("exchange", form.get("service", "")))
                if form.get("grant_type") != "access_token" or form.get("access_token") != acr.aad_token:
                    return self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid AAD token"}]})
                token = f"refresh-{secrets.token_hex(8)}"
                acr.refresh_tokens.add(token)
                return self._json(200, {"refresh_token": token})
            acr.exchanges.append(("token", form.get("scope", "")))
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") not in acr.refresh_tokens:
                return self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid refresh token"}]})
            token = f"access-{secrets.token_hex(8)}"
            acr.access_tokens.add(token)
            return self._json(200, {"access_token": token})

    def _json(self, status: int, document: dict, headers: dict | None = None) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json; charset=utf-8", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
