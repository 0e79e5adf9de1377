"""A fake Azure Resource Manager endpoint for ACR's importImage, backed by real distribution registries.

ARM itself cannot be reached from here, so this speaks its wire protocol to the real azure-mgmt-containerregistry
client, over HTTPS (tests/fakes/selfsigned.py), as ARM does for this long-running operation:

    POST {registry id}/importImage?api-version=V      body ImportImageParameters as JSON (camelCase)
        -> 202, headers Azure-AsyncOperation: {provider}/locations/{loc}/operationStatuses/{id}?api-version=V
                        Location:             {provider}/locations/{loc}/operationResults/{id}?api-version=V
    GET  .../operationStatuses/{id}   -> 200 {"id", "name", "status": "InProgress" | "Succeeded" | "Failed",
                                              "startTime", ["endTime"], ["error": {"code", "message"}]}
    GET  .../operationResults/{id}    -> 202 while it runs, 204 once it succeeded, 400 + error if it failed
    With `async_operation=False` the 202 carries Location only, and the client polls that (ARM's other
    long-running-operation pattern; which one importImage uses in Azure is not pinned down here, so both are).
    anything unauthenticated          -> 401 {"error": {"code": "AuthenticationFailed", ...}} + WWW-Authenticate
    an unknown registry               -> 404 {"error": {"code": "ResourceNotFound", ...}}
    a body without source.sourceImage -> 400 {"error": {"code": "InvalidParameters", ...}}

The operation reports InProgress for `polls` status requests, then does the import and reports its end. The
import is real: `registries` maps registry names (the target, and sources named by resource id) to the login
servers of real registries reached over plain HTTP (the local distribution registry), and the manifest is
copied as bytes, blobs first (mounted within a registry, streamed across), as ACR copies server side; so a
test reads the digest back from the real target registry. Mode NoForce fails the operation when a target tag
exists (the code "TagAlreadyExists" is this fake's; ARM's own code is not known here).

Requests are recorded (`server.requests`: method, path, query, JSON body) for tests to assert on.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler

import httpx

REGISTRY_PATH = re.compile(r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
                           r"Microsoft\.ContainerRegistry/registries/(?P<name>[^/]+)")
IMPORT = re.compile(REGISTRY_PATH.pattern + r"/importImage")
OPERATION = re.compile(r"/subscriptions/[^/]+/providers/Microsoft\.ContainerRegistry/locations/[^/]+/"
                       r"(?P<kind>operationStatuses|operationResults)/(?P<id>[^/]+)")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
IMAGE_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
ACCEPT = ", ".join(INDEX_TYPES + IMAGE_TYPES)


@dataclasses.dataclass
class Operation:
    id: str
    body: dict
    target: str            # the target registry's login server
    polls_left: int
    status: str = "InProgress"
    error: dict | None = None
    start: str = dataclasses.field(default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat())
    end: str | None = None


class FakeArm:
    """State shared by the handler threads: registries, operations, recorded requests, the expected token."""

    def __init__(self, *, token: str, registries: dict[str, str], polls: int = 2,
                 api_version: str = "2025-11-01", location: str = "westeurope", async_operation: bool = True) -> None:
        self.token = token
        self.async_operation = async_operation
        self.registries = registries
        self.polls = polls
        self.api_version = api_version
        self.location = location
        self.operations: dict[str, Operation] = {}
        self.requests: list[tuple[str, str, dict, dict | None]] = []
        self.fail_next: dict | None = None  # {"code", "message"}: the next operation fails with it
        self.lock = threading.Lock()


class ArmHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # self.server.arm is the FakeArm (selfsigned.https_server sets it)

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- dispatch ---------------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        arm: FakeArm = self.server.arm
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with arm.lock:
            arm.requests.append((method, url.path, query, body))
        if self.headers.get("Authorization") != f"Bearer {arm.token}":
            return self._error(401, "AuthenticationFailed", "Authentication failed.",
                               {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                                                    'common", error="invalid_token"'})
        if query.get("api-version") != arm.api_version:
            return self._error(400, "InvalidApiVersionParameter", f"api-version {query.get('api-version')!r} "
                               "is not supported")
        if method == "POST" and (match := IMPORT.fullmatch(url.path)):
            return self._import(arm, match, body)
        if method == "GET" and (match := OPERATION.fullmatch(url.path)):
            return self._operation(arm, match)
        self._error(404, "NotFound", f"no route {method} {url.path}")

    # -- importImage ------------------------------------------------------------------------------------------
    def _import(self, arm: FakeArm, match: re.Match, body: dict | None) -> None:
        target = arm.registries.get(match["name"])
        if target is None:
            return self._error(404, "ResourceNotFound", f"The Resource 'Microsoft.ContainerRegistry/registries/"
                               f"{match['name']}' under resource group '{match['rg']}' was not found.")
        source = (body or {}).get("source") or {}
        if not source.get("sourceImage") or not (source.get("resourceId") or source.get("registryUri")):
            return self._error(400, "InvalidParameters", "source.sourceImage and source.resourceId or "
                               "source.registryUri are required")
        operation = Operation(id=str(uuid.uuid4()), body=body, target=target, polls_left=arm.polls)
        with arm.lock:
            operation.error, arm.fail_next = arm.fail_next, None
            arm.operations[operation.id] = operation
        base = f"https://{self.headers['Host']}/subscriptions/{match['sub']}/providers/Microsoft.ContainerRegistry/" \
               f"locations/{arm.location}"
        query = f"?api-version={arm.api_version}"
        headers = {"Location": f"{base}/operationResults/{operation.id}{query}"}
        if arm.async_operation:
            headers["Azure-AsyncOperation"] = f"{base}/operationStatuses/{operation.id}{query}"
        self._send(202, b"", headers)

    def _operation(self, arm: FakeArm, match: re.Match) -> None:
        with arm.lock:
            operation = arm.operations.get(match["id"])
        if operation is None:
            return self._error(404, "OperationNotFound", f"no operation {match['id']}")
        if match["kind"] == "operationResults" and arm.async_operation:
            return self._send(204 if operation.status != "InProgress" else 202, b"", {})
        with arm.lock:
            run = operation.status == "InProgress" and operation.polls_left <= 0
            operation.polls_left -= 1
        if run:
            self._run(arm, operation)
        if match["kind"] == "operationResults":  # Location polling: the status is the HTTP status
            if operation.status == "InProgress":
                return self._send(202, b"", {"Location": f"https://{self.headers['Host']}{self.path}"})
            if operation.status == "Failed":
                return self._json(400, {"error": operation.error})
            return self._send(204, b"", {})
        document = {"id": f"{self.path.split('?')[0]}", "name": operation.id, "status": operation.status,
                    "startTime": operation.start}
        if operation.end:
            document["endTime"] = operation.end
        if operation.status == "Failed":
            document["error"] = operation.error
        self._json(200, document)

    def _run(self, arm: FakeArm, operation: Operation) -> None:
        if operation.error is None:
            try:
                operation.error = import_image(arm, operation.body, operation.target)
            except (httpx.HTTPError, ValueError, KeyError) as e:
                operation.error = {"code": "InternalServerError", "message": f"import failed: {type(e).__name__}"}
        operation.status = "Failed" if operation.error else "Succeeded"
        operation.end = datetime.datetime.now(datetime.UTC).isoformat()

    # -- wire helpers -----------------------------------------------------------------------------------------
    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        self._json(status, {"error": {"code": code, "message": message}}, headers)

    def _json(self, status: int, document: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(document).encode(), {"Content-Type": "application/json; charset=utf-8",
                                                           **(headers or {})})

    def _send(self, status: int, payload: bytes, headers: dict) -> None:
        self.send_response(status)
        for name, value in {"x-ms-request-id": str(uuid.uuid4()), **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


# -- the import, done against real registries over the distribution API ---------------------------------------
def import_image(arm: FakeArm, body: dict, target: str) -> dict | None:
    """Copies source.sourceImage into `target` under every targetTags entry; returns an ARM error or None."""
    source = body["source"]
    if source.get("resourceId"):
        name = REGISTRY_PATH.fullmatch(source["resourceId"])
        origin = arm.registries.get(name["name"]) if name else None
        if origin is None:
            return {"code": "InvalidParameters", "message": "source registry not found"}
    else:
        origin = source["registryUri"]
    repository, reference = _split(source["sourceImage"])
    tags = body.get("targetTags") or [source["sourceImage"]]
    with httpx.Client(timeout=60) as http:
        if body.get("mode", "NoForce") == "NoForce":
            for target_tag in tags:
                if http.head(f"http://{target}/v2/{'/manifests/'.join(target_tag.rsplit(':', 1))}",
                             headers={"Accept": ACCEPT}).status_code == 200:
                    return {"code": "TagAlreadyExists", "message": f"Tag {target_tag} already exists in target "
                            "registry; use mode Force to overwrite it"}
        manifest = http.get(f"http://{origin}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
        if manifest.status_code == 404:
            return {"code": "InvalidParameters", "message": f"source image {source['sourceImage']} not found"}
        manifest.raise_for_status()
        for target_tag in tags:
            target_repository, tag = target_tag.rsplit(":", 1)
            _copy(http, origin, repository, manifest, target, target_repository)
            http.put(f"http://{target}/v2/{target_repository}/manifests/{tag}", content=manifest.content,
                     headers={"Content-Type": manifest.headers["Content-Type"]}).raise_for_status()
    return None


def _split(image: str) -> tuple[str, str]:
    return tuple(image.split("@", 1)) if "@" in image else tuple(image.rsplit(":", 1))


def _copy(http: httpx.Client, origin: str, repository: str, manifest: httpx.Response, target: str,
          target_repository: str) -> None:
    body = manifest.json()
    if manifest.headers["Content-Type"] in INDEX_TYPES:
        for entry in body["manifests"]:
            child = http.get(f"http://{origin}/v2/{repository}/manifests/{entry['digest']}",
                             headers={"Accept": ACCEPT})
            child.raise_for_status()
            _copy(http, origin, repository, child, target, target_repository)
            http.put(f"http://{target}/v2/{target_repository}/manifests/{entry['digest']}", content=child.content,
                     headers={"Content-Type": child.headers["Content-Type"]}).raise_for_status()
        return
    for blob in [body["config"], *body.get("layers", [])]:
        digest = blob["digest"]
        if http.head(f"http://{target}/v2/{target_repository}/blobs/{digest}").status_code == 200:
            continue
        if origin == target:
            mounted = http.post(f"http://{target}/v2/{target_repository}/blobs/uploads/",
                                params={"mount": digest, "from": repository})
            if mounted.status_code == 201:
                continue
        data = http.get(f"http://{origin}/v2/{repository}/blobs/{digest}", follow_redirects=True)
        data.raise_for_status()
        start = http.post(f"http://{target}/v2/{target_repository}/blobs/uploads/")
        start.raise_for_status()
        location = urllib.parse.urljoin(f"http://{target}/", start.headers["Location"])
        http.put(location, params={"digest": digest}, content=data.content,
                 headers={"Content-Type": "application/octet-stream"}).raise_for_status()
