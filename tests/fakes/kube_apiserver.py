"""A fake Kubernetes API server: HTTPS on 127.0.0.1, the real wire protocol of the endpoints KubernetesDeployer
uses, and Deployments whose status a simulated deployment controller computes. The real `kubernetes` client
talks to it over HTTP; nothing inside `kubernetes.*` is mocked.

Endpoints (anything else answers a 404 Status, as the API server does for an unknown path):

    GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}                                   verb get
    PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}                                   verb patch
          application/strategic-merge-patch+json (lists of containers, env, ports... merge by their key) or
          application/merge-patch+json; `metadata.resourceVersion` in the patch is a precondition (409).
    GET   /apis/apps/v1/namespaces/{ns}/deployments?fieldSelector=metadata.name%3D{name}     verb list
          ...&watch=true[&resourceVersion=N][&timeoutSeconds=T]: a chunked stream of watch events, one JSON
          object a line ({"type": "ADDED"|"MODIFIED"|"DELETED"|"ERROR", "object": ...})       verb watch
    GET   /api/v1/namespaces/{ns}/services/{name}[:{port}]/proxy/{path}                      get services/proxy
          proxied to a ready pod of the Service (round robin): `/version` answers the JSON the test set for
          that pod's image; no ready pod: 503 "no endpoints available", as the real proxy says.

Every request must carry `Authorization: Bearer <one of tokens>` (else 401 Unauthorized); each is recorded in
`requests` with its RBAC verb and resource, so a test can check the deployer's least-privilege claim.

The controller (a thread) advances every Deployment one step per `tick_seconds`, as the real one does over
ReplicaSets: a spec change bumps metadata.generation; the controller then observes it (observedGeneration),
surges a pod of the new template (RollingUpdate, maxSurge 25% rounded up, maxUnavailable 25% rounded down),
marks it ready if its images `become available` (behaviour[image], default "available"), scales old pods down
while availability allows, and computes status: replicas, updatedReplicas, readyReplicas, availableReplicas,
unavailableReplicas, and the conditions Available (MinimumReplicasAvailable / MinimumReplicasUnavailable) and
Progressing (NewReplicaSetCreated, ReplicaSetUpdated, NewReplicaSetAvailable; False with
ProgressDeadlineExceeded once no step was possible for `progress_deadline` seconds: spec.progressDeadlineSeconds
scaled down to test time). An image whose behaviour is "never" never becomes ready.

`fail_next_patches` holds HTTP statuses the next PATCHes answer instead of applying (409 Conflict, 500...).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json
import math
import re
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "ports": "containerPort",
              "volumes": "name", "volumeMounts": "mountPath", "imagePullSecrets": "name"}
PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json")
DEPLOYMENT = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?$")
SERVICE_PROXY = re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/]+)/proxy(/.*)?$")


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, bytes]:
    """A fresh key and self-signed certificate for `host` (an IP SAN and `localhost`), written to directory:
    (cert file, key file, cert PEM). The PEM is what a client trusts as its CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shipbot-test-apiserver")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, pem


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A metav1.Status, the body of every API error."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def strategic_merge(target: dict[str, Any], patch: dict[str, Any], *, strategic: bool = True) -> None:
    """Applies `patch` to `target` in place: maps merge, null deletes, lists with a merge key merge item by
    item (strategic merge patch), any other list is replaced (as in a JSON merge patch)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value, strategic=strategic)
        elif strategic and isinstance(value, list) and key in MERGE_KEYS and isinstance(target.get(key), list):
            merge_key = MERGE_KEYS[key]
            for item in value:
                match = next((old for old in target[key] if isinstance(item, dict)
                              and old.get(merge_key) == item.get(merge_key)), None)
                if match is None:
                    target[key].append(copy.deepcopy(item))
                else:
                    strategic_merge(match, item, strategic=strategic)
        else:
            target[key] = copy.deepcopy(value)


@dataclasses.dataclass
class Pod:
    image: str   # its containers' images, comma-separated
    ready: bool


@dataclasses.dataclass
class Rollout:
    """The controller's view of one Deployment: its pods (every ReplicaSet's) and when it last progressed."""

    pods: list[Pod]
    observed: int
    last_progress: float
    timed_out: bool = False
    reason: str = "NewReplicaSetAvailable"


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    verb: str          # the RBAC verb the API server would authorize: get, list, watch, patch
    resource: str      # deployments, services/proxy
    namespace: str
    name: str
    content_type: str
    authorization: str


class KubeApiServer:
    """Start with `with KubeApiServer(tokens={"t"}) as api:`; `api.url`, `api.ca_pem` for the client."""

    def __init__(self, *, tokens: set[str] | None = None, tick_seconds: float = 0.01,
                 progress_deadline: float = 0.3) -> None:
        self.tokens = set(tokens or {"test-token"})
        self.tick_seconds = tick_seconds
        self.progress_deadline = progress_deadline
        self.behaviour: dict[str, str] = {}           # image -> "available" (default) | "never"
        self.versions: dict[str, dict[str, Any]] = {}  # image -> its /version document
        self.fail_next_patches: list[int] = []
        self.requests: list[Request] = []
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self._rollouts: dict[tuple[str, str], Rollout] = {}
        self._events: list[tuple[int, tuple[str, str], str, dict[str, Any]]] = []
        self._version = 100
        self._round_robin = 0
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._tmp = tempfile.TemporaryDirectory(prefix="kube-apiserver-")
        cert, key, self.ca_pem = self_signed_cert(Path(self._tmp.name))
        self.ca_file = str(cert)
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.api = self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        self._threads = [threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                          name="fake-apiserver", daemon=True),
                         threading.Thread(target=self._control, name="fake-controller", daemon=True)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._tmp.cleanup()

    def api_client(self, token: str | None = None):
        """A real kubernetes ApiClient for this server: its URL, its CA, a static bearer token."""
        from kubernetes import client

        config = client.Configuration(host=self.url, ca_cert_data=self.ca_pem.decode())
        config.api_key["BearerToken"] = token if token is not None else next(iter(self.tokens))
        config.api_key_prefix["BearerToken"] = "Bearer"
        return client.ApiClient(config)

    # -- what a test sets up, as infra (Bicep, Helm) would --------------------------------------------------
    def add_deployment(self, namespace: str, name: str, *, image: str, container: str = "model-api",
                       replicas: int = 2, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """A Deployment already rolled out: `replicas` ready pods of `image`."""
        labels = labels or {"app": name}
        body = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1,
                         "creationTimestamp": _now(), "labels": dict(labels), "annotations": {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{"name": container, "image": image,
                                                           "ports": [{"containerPort": 5001, "protocol": "TCP"}]}]}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                     "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
            "status": {},
        }
        with self._changed:
            key = (namespace, name)
            self.deployments[key] = body
            self._rollouts[key] = Rollout([Pod(image, True) for _ in range(replicas)], 1, time.monotonic())
            self._compute_status(key)
            self._record(key, "ADDED")
        return copy.deepcopy(body)

    def add_service(self, namespace: str, name: str, *, selector: dict[str, str] | None = None,
                    port: int = 80, target_port: int = 5001) -> None:
        self.services[(namespace, name)] = {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": selector or {"app": name}, "type": "ClusterIP",
                     "ports": [{"name": "http", "port": port, "targetPort": target_port, "protocol": "TCP"}]},
        }

    def image_of(self, namespace: str, name: str, container: str = "model-api") -> str:
        with self._changed:
            containers = self.deployments[(namespace, name)]["spec"]["template"]["spec"]["containers"]
            return next(c["image"] for c in containers if c["name"] == container)

    def pods(self, namespace: str, name: str) -> list[Pod]:
        with self._changed:
            return [dataclasses.replace(p) for p in self._rollouts[(namespace, name)].pods]

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        """Waits (on the controller's notifications, not a sleep) until predicate() holds; False at timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    # -- the deployment controller ---------------------------------------------------------------------------
    def _control(self) -> None:
        while not self._stopping.wait(self.tick_seconds):
            with self._changed:
                for key in list(self.deployments):
                    if self._step(key):
                        self._compute_status(key)
                        self._record(key, "MODIFIED")

    def _step(self, key: tuple[str, str]) -> bool:
        """One reconcile of one Deployment; True when its status changed."""
        deployment, rollout = self.deployments[key], self._rollouts[key]
        now = time.monotonic()
        generation = deployment["metadata"]["generation"]
        if rollout.observed < generation:
            rollout.observed, rollout.last_progress, rollout.timed_out = generation, now, False
            rollout.reason = "NewReplicaSetCreated"
            return True
        replicas, image = deployment["spec"]["replicas"], _image(deployment)
        surge, unavailable = _surge(replicas)
        new = [p for p in rollout.pods if p.image == image]
        old = [p for p in rollout.pods if p.image != image]
        available = sum(p.ready for p in rollout.pods)
        healthy = all(self.behaviour.get(each, "available") == "available" for each in image.split(","))
        waiting = next((p for p in new if not p.ready), None)
        if waiting is not None and healthy:
            waiting.ready = True
        elif any(not p.ready for p in old):
            rollout.pods.remove(next(p for p in old if not p.ready))
        elif len(new) < replicas and len(rollout.pods) < replicas + surge:
            rollout.pods.append(Pod(image, False))
        elif old and available - 1 >= replicas - unavailable and len(rollout.pods) > replicas - unavailable:
            rollout.pods.remove(old[0])
        elif len(new) > replicas:
            rollout.pods.remove(new[-1])
        else:
            complete = len(new) == replicas and not old and all(p.ready for p in new)
            if complete and rollout.reason != "NewReplicaSetAvailable":
                rollout.reason = "NewReplicaSetAvailable"
                return True
            if not complete and not rollout.timed_out and now - rollout.last_progress > self.progress_deadline:
                rollout.timed_out, rollout.reason = True, "ProgressDeadlineExceeded"
                return True
            return False
        rollout.last_progress, rollout.reason = now, "ReplicaSetUpdated"
        return True

    def _compute_status(self, key: tuple[str, str]) -> None:
        deployment, rollout = self.deployments[key], self._rollouts[key]
        replicas, image = deployment["spec"]["replicas"], _image(deployment)
        _, unavailable = _surge(replicas)
        ready = sum(p.ready for p in rollout.pods)
        replica_set = f"{key[1]}-{hashlib.sha256(image.encode()).hexdigest()[:10]}"
        messages = {"NewReplicaSetCreated": f'Created new replica set "{replica_set}"',
                    "ReplicaSetUpdated": f'ReplicaSet "{replica_set}" is progressing.',
                    "NewReplicaSetAvailable": f'ReplicaSet "{replica_set}" has successfully progressed.',
                    "ProgressDeadlineExceeded": f'ReplicaSet "{replica_set}" has timed out progressing.'}
        minimum = ready >= replicas - unavailable
        now = _now()
        conditions = [
            {"type": "Available", "status": "True" if minimum else "False",
             "reason": "MinimumReplicasAvailable" if minimum else "MinimumReplicasUnavailable",
             "message": "Deployment has minimum availability." if minimum
             else "Deployment does not have minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "False" if rollout.timed_out else "True", "reason": rollout.reason,
             "message": messages[rollout.reason], "lastUpdateTime": now, "lastTransitionTime": now},
        ]
        status_ = {"observedGeneration": rollout.observed, "replicas": len(rollout.pods),
                   "updatedReplicas": sum(p.image == image for p in rollout.pods),
                   "readyReplicas": ready, "availableReplicas": ready,
                   "unavailableReplicas": max(0, replicas - ready), "conditions": conditions}
        deployment["status"] = {k: v for k, v in status_.items() if v or k == "conditions"}  # omitempty

    def _record(self, key: tuple[str, str], kind: str) -> None:
        self._version += 1
        self.deployments[key]["metadata"]["resourceVersion"] = str(self._version)
        self._events.append((self._version, key, kind, copy.deepcopy(self.deployments[key])))
        self._changed.notify_all()

    # -- requests ----------------------------------------------------------------------------------------------
    def handle(self, handler: _Handler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = urllib.parse.unquote(url.path)
        deployment, proxy = DEPLOYMENT.match(path), SERVICE_PROXY.match(url.path)
        if proxy:
            namespace, name = urllib.parse.unquote(proxy[1]), urllib.parse.unquote(proxy[2])
            verb, resource = "get", "services/proxy"
        elif deployment:
            namespace, name = deployment[1], deployment[2] or ""
            resource = "deployments"
            verb = {"PATCH": "patch"}.get(method, "get" if name else
                                          "watch" if query.get("watch") in ("true", "1") else "list")
        else:
            namespace = name = verb = resource = ""
        authorization = handler.headers.get("Authorization", "")
        self.requests.append(Request(method, verb, resource, namespace, name,
                                     handler.headers.get("Content-Type", ""), authorization))
        if authorization.removeprefix("Bearer ") not in self.tokens or not authorization.startswith("Bearer "):
            return handler.reply(401, status(401, "Unauthorized", "Unauthorized"))
        if proxy and method == "GET":
            return self._proxy(handler, namespace, name, proxy[3] or "/")
        if deployment and method == "GET" and name:
            return self._get(handler, (namespace, name))
        if deployment and method == "GET":
            return self._list_or_watch(handler, namespace, query)
        if deployment and method == "PATCH" and name:
            return self._patch(handler, (namespace, name))
        handler.reply(404, status(404, "NotFound", "the server could not find the requested resource"))

    def _get(self, handler: _Handler, key: tuple[str, str]) -> None:
        with self._changed:
            body = copy.deepcopy(self.deployments.get(key))
        if body is None:
            return handler.reply(404, _not_found(key[1]))
        handler.reply(200, body)

    def _patch(self, handler: _Handler, key: tuple[str, str]) -> None:
        content_type = handler.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in PATCH_TYPES:
            return handler.reply(415, status(415, "UnsupportedMediaType",
                                             f"the body of the request was in an unknown format - accepted media "
                                             f"types include: {', '.join(PATCH_TYPES)}"))
        try:
            patch = json.loads(handler.body() or b"null")
        except ValueError as e:
            return handler.reply(400, status(400, "BadRequest", f"error decoding patch: {e}"))
        if not isinstance(patch, dict):
            return handler.reply(400, status(400, "BadRequest", "the patch is not a JSON object"))
        with self._changed:
            if self.fail_next_patches:
                code = self.fail_next_patches.pop(0)
                return handler.reply(code, _conflict(key[1]) if code == 409 else
                                     status(code, "InternalError", "an error on the server has prevented the "
                                            "request from succeeding"))
            current = self.deployments.get(key)
            if current is None:
                return handler.reply(404, _not_found(key[1]))
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                return handler.reply(409, _conflict(key[1]))
            updated = copy.deepcopy(current)
            strategic_merge(updated, patch, strategic=content_type == PATCH_TYPES[0])
            containers = updated["spec"]["template"]["spec"].get("containers") or []
            if not containers or not all(c.get("name") and c.get("image") for c in containers):
                return handler.reply(422, status(422, "Invalid", f'Deployment.apps "{key[1]}" is invalid: '
                                                 "spec.template.spec.containers: Required value"))
            updated["status"] = current["status"]  # the main resource's patch never writes status
            updated["metadata"]["generation"] = current["metadata"]["generation"] + (
                updated["spec"] != current["spec"])
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            if updated != current:
                self.deployments[key] = updated
                self._record(key, "MODIFIED")
            body = copy.deepcopy(self.deployments[key])
        handler.reply(200, body)

    def _list_or_watch(self, handler: _Handler, namespace: str, query: dict[str, str]) -> None:
        selector = query.get("fieldSelector", "")
        match = re.fullmatch(r"metadata\.name=([a-z0-9.-]+)", selector)
        if selector and not match:
            return handler.reply(400, status(400, "BadRequest", f'"{selector}" is not a known field selector'))
        name = match[1] if match else None
        wanted = lambda key: key[0] == namespace and (name is None or key[1] == name)
        with self._changed:
            items = [copy.deepcopy(d) for k, d in self.deployments.items() if wanted(k)]
            version = self._version
        if query.get("watch") not in ("true", "1"):
            return handler.reply(200, {"kind": "DeploymentList", "apiVersion": "apps/v1",
                                       "metadata": {"resourceVersion": str(version)}, "items": items})
        since = query.get("resourceVersion", "")
        timeout = min(float(query.get("timeoutSeconds") or 30), 30.0)
        handler.stream(self._watch(wanted, items, since, time.monotonic() + timeout))

    def _watch(self, wanted, items: list[dict[str, Any]], since: str, deadline: float) -> Iterator[dict[str, Any]]:
        if since in ("", "0"):  # no version: the current state first, as synthetic ADDED events
            last = self._version
            for item in items:
                yield {"type": "ADDED", "object": item}
        else:
            last = int(since)
            if self._events and last < self._events[0][0] - 1:
                yield {"type": "ERROR", "object": status(410, "Expired", f"too old resource version: {since}")}
                return
        while not self._stopping.is_set():
            with self._changed:
                pending = [(v, k, t, o) for v, k, t, o in self._events if v > last and wanted(k)]
                if not pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._changed.wait(min(left, 0.5))
                    continue
            for version, _, kind, obj in pending:
                last = version
                yield {"type": kind, "object": obj}

    def _proxy(self, handler: _Handler, namespace: str, target: str, path: str) -> None:
        name, _, port = target.removeprefix("http:").removeprefix("https:").partition(":")
        with self._changed:
            service = self.services.get((namespace, name))
            if service is None:
                return handler.reply(404, status(404, "NotFound", f'services "{name}" not found',
                                                 name=name, kind="services"))
            ports = service["spec"]["ports"]
            if port and not any(port in (str(p["port"]), p.get("name")) for p in ports):
                return handler.reply(503, status(503, "ServiceUnavailable",
                                                 f'no endpoints available for service "{target}"'))
            selector = service["spec"]["selector"]
            ready = [p for key, d in self.deployments.items() if key[0] == namespace
                     and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                     for p in self._rollouts[key].pods if p.ready]
            if not ready:
                return handler.reply(503, status(503, "ServiceUnavailable",
                                                 f'no endpoints available for service "{name}"'))
            self._round_robin += 1
            pod = ready[self._round_robin % len(ready)]
            version = next((self.versions[each] for each in pod.image.split(",") if each in self.versions), None)
        if path.rstrip("/") == "/version" and version is not None:
            return handler.reply(200, version)
        handler.reply(404, {"error": {"code": "not_found", "message": f"no route {path}"}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: KubeApiServer

    def handle_error(self, request, client_address) -> None:  # a client that hangs up mid-watch is normal
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    _body: bytes | None = None

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle/delayed-ACK stalls

    def do_GET(self) -> None:
        self._body = None  # one handler serves every request of a kept-alive connection
        self.server.api.handle(self, "GET")

    def do_PATCH(self) -> None:
        self._body = None
        self.server.api.handle(self, "PATCH")

    def body(self) -> bytes:
        """The request's body, read once (a reply reads it too, so that the connection can be reused)."""
        if self._body is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(length) if length else b""
        return self._body

    def reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.body()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, events: Iterator[dict[str, Any]]) -> None:
        """A watch: chunked transfer encoding, one event a line, flushed as it happens."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _image(deployment: dict[str, Any]) -> str:
    """What identifies a pod template here: its containers' images, comma-separated (one image: that image)."""
    return ",".join(c["image"] for c in deployment["spec"]["template"]["spec"]["containers"])


def _surge(replicas: int) -> tuple[int, int]:
    """maxSurge and maxUnavailable of 25% each: surge rounds up, unavailable down (never both zero)."""
    surge, unavailable = math.ceil(replicas * 0.25), math.floor(replicas * 0.25)
    return (surge or 1, unavailable) if not (surge or unavailable) else (surge, unavailable)


def _not_found(name: str) -> dict[str, Any]:
    return status(404, "NotFound", f'deployments.apps "{name}" not found', name=name, group="apps",
                  kind="deployments")


def _conflict(name: str) -> dict[str, Any]:
    return status(409, "Conflict", f'Operation cannot be fulfilled on deployments.apps "{name}": the object has been '
                  "modified; please apply your changes to the latest version and try again",
                  name=name, group="apps", kind="deployments")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
