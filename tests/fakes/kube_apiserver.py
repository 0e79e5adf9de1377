"""A fake Kubernetes API server: HTTPS on 127.0.0.1, the real wire protocol of the endpoints KubernetesDeployer
uses, and Deployments whose status a simulated deployment controller computes, as kube-apiserver v1.36 and its
deployment controller do where tests lean on them. The real `kubernetes` client talks to it over HTTP; nothing
inside `kubernetes.*` is mocked.

Endpoints (anything else answers a 404 Status, as the API server does for an unknown path):

    GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}                                   verb get
    PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}                                   verb patch
          application/strategic-merge-patch+json (lists of containers, env, ports... merge by their key) or
          application/merge-patch+json; `metadata.resourceVersion` in the patch is a precondition (409); a
          malformed spec.strategy.rollingUpdate (not an int >= 0 or "NN%", both 0, maxUnavailable > 100%) is a
          422 Invalid.
    GET   /apis/apps/v1/namespaces/{ns}/deployments?fieldSelector=metadata.name%3D{name}     verb list
          ...&watch=true[&resourceVersion=N][&timeoutSeconds=T]: a chunked stream of watch events, one JSON
          object a line ({"type": "ADDED"|"MODIFIED"|"DELETED"|"ERROR", "object": ...})       verb watch
          The server ends the stream cleanly (terminating chunk) after exactly T seconds; without T (or 0)
          after 1800 s, the real server's minimum request timeout (it picks 1800-3600 s at random).
    GET   /api/v1/namespaces/{ns}/services/{id}/proxy/{path}                                 get services/proxy
          id `[scheme:]name[:port]`, the port a number or a name; to a ready pod of the Service, round robin:
          a path in `routes[image]` answers that JSON, `/version` the one `versions[image]` holds. Errors as the real proxy's: 400
          `invalid service request "<id>"` (over three parts, no name, a scheme not http/https); a port number
          the Service lacks: 503 `no service port N found for service "<name>"` (no Service: 404 `services
          "<name>" not found`), else the number stands for that port's name; no Service: 404 `endpoints
          "<name>" not found`; no pod selected: 503 `no endpoints available for service "<name>"`; no ready pod,
          or no port by that name: the same with "<id>". An id without a port names the port "": only an
          unnamed port matches it (hence `https:dashboard:` in the dashboard's proxy URL).

Error bodies are metav1.Status, compact JSON with the fields in the API server's order.

Authentication and RBAC: every request must carry `Authorization: Bearer <one of tokens>` (else 401
Unauthorized). `rules` maps a token to what it may do, (verb, resource, resourceName or None for any); a token
without an entry may do everything. Resources: "deployments" (API group "apps"), "services/proxy" (group "").
The name authorized is the object's for get/patch, the X of a `fieldSelector=metadata.name=X` for a list or
watch (as the real authorizer does; none without one), and the proxy id exactly as the URL names it
("app:80", "http:app:80"). A refusal is the real 403 Forbidden Status: `deployments.apps "app" is forbidden:
User "<users[token]>" cannot patch resource "deployments" in API group "apps" in the namespace "staging"`. Every
request is recorded in `requests` with its RBAC verb, resource, authorized name and the status it was answered
with, so a test can check the deployer's least-privilege claim.

The controller (a thread) advances every Deployment one step per `tick_seconds`, as the real one does over
ReplicaSets. Each distinct pod template has a ReplicaSet `<deployment>-<10 hex of a hash of the template>`
(its template carries the `pod-template-hash` label): a new template makes a new one whose revision
(annotation `deployment.kubernetes.io/revision`) is the highest so far + 1; a template equal to an old one's (a
rollback) reuses that ReplicaSet, bumps its revision to the highest + 1 and appends the old revision to its
`deployment.kubernetes.io/revision-history`. On every sync the controller copies the Deployment's annotations
onto its new ReplicaSet (except last-applied-configuration and the deployment.kubernetes.io/ bookkeeping
keys; a key the Deployment lacks is left alone) and sets the Deployment's own revision annotation to the new
ReplicaSet's. Old ReplicaSets without pods beyond spec.revisionHistoryLimit are deleted, the lowest revision
first, once a rollout is complete. `history()` is what `kubectl rollout history` shows, `replica_sets()` the
ReplicaSets themselves.

A spec change bumps metadata.generation; the controller then observes it (observedGeneration), surges pods of
the new template within spec.strategy.rollingUpdate (maxSurge and maxUnavailable: an int or "NN%" of
spec.replicas, surge rounded up, unavailable down, maxUnavailable 1 when both come to 0), marks one ready if
its images `become available` (behaviour[image], default "available"), scales old pods down while
availability allows (never below replicas - maxUnavailable ready, never above replicas + maxSurge pods), and
computes status: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas, and the
conditions Available (MinimumReplicasAvailable / MinimumReplicasUnavailable, against maxUnavailable) and
Progressing (NewReplicaSetCreated, or ReplicaSetUpdated when an old ReplicaSet is reused, ReplicaSetUpdated,
NewReplicaSetAvailable; False with ProgressDeadlineExceeded once no step was possible for `progress_deadline`
seconds: spec.progressDeadlineSeconds scaled down to test time), their messages naming the new ReplicaSet. An
image whose behaviour is "never" never becomes ready.

`fail_next_patches` holds HTTP statuses the next PATCHes answer instead of applying (409 Conflict, 500...).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json
import re
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "ports": "containerPort",
              "volumes": "name", "volumeMounts": "mountPath", "imagePullSecrets": "name"}
PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json")
DEPLOYMENT = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?$")
SERVICE_PROXY = re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/]+)/proxy(/.*)?$")
GROUPS = {"deployments": "apps", "services/proxy": ""}   # resource -> its API group
DEFAULT_USER = "system:serviceaccount:shipbot:deployer"
MIN_REQUEST_TIMEOUT = 1800.0  # kube-apiserver --min-request-timeout: a watch without timeoutSeconds lasts this
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE = "kubernetes.io/change-cause"
TEMPLATE_HASH = "pod-template-hash"
NOT_COPIED = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                        "deployment.kubernetes.io/desired-replicas", "deployment.kubernetes.io/max-replicas",
                        "deprecated.deployment.rollback.to"})  # the controller's skipCopyAnnotation keys
PERCENT = re.compile(r"[0-9]+%")
Rule = tuple[str, str, str | None]   # (verb, resource, resourceName or None for any), "*" matches any verb/resource


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
    """A metav1.Status, the body of every API error (its fields in the API server's order)."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details:
        body["details"] = details
    body["code"] = code
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


def scaled(value: int | str, replicas: int, *, round_up: bool) -> int:
    """An IntOrString of a rolling update against spec.replicas: an int as it is, "NN%" that share of replicas
    rounded up or down. Anything else is a ValueError (the API server's validation refuses it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and PERCENT.fullmatch(value):
        share = int(value[:-1]) * replicas
        return -(-share // 100) if round_up else share // 100
    raise ValueError(f"{value!r} is neither an integer nor a percentage")


def resolve_fenceposts(max_surge: int | str, max_unavailable: int | str, replicas: int) -> tuple[int, int]:
    """(surge, unavailable) as the deployment controller resolves them: maxSurge rounds up, maxUnavailable
    down, and when both come to 0 maxUnavailable is 1, so that a rollout can always make progress."""
    surge, unavailable = scaled(max_surge, replicas, round_up=True), scaled(max_unavailable, replicas, round_up=False)
    return (surge, 1) if surge == 0 and unavailable == 0 else (surge, unavailable)


def watch_timeout(query: Mapping[str, str]) -> float:
    """How long the server keeps a watch open: timeoutSeconds exactly; absent or 0, the minimum request
    timeout. A value that is not an integer is a ValueError (a 400)."""
    raw = query.get("timeoutSeconds", "")
    if raw == "":
        return MIN_REQUEST_TIMEOUT
    if not re.fullmatch(r"[+-]?[0-9]+", raw):
        raise ValueError(f"timeoutSeconds: {raw!r} is not an integer")
    return float(int(raw)) or MIN_REQUEST_TIMEOUT


@dataclasses.dataclass
class Pod:
    image: str   # its containers' images, comma-separated
    ready: bool
    replica_set: str = ""  # the name of the ReplicaSet that owns it


@dataclasses.dataclass
class ReplicaSet:
    name: str
    template: dict[str, Any]     # the Deployment's pod template, its labels plus pod-template-hash
    annotations: dict[str, str]

    @property
    def revision(self) -> int:
        return int(self.annotations.get(REVISION) or 0)


@dataclasses.dataclass
class Rollout:
    """The controller's view of one Deployment: its ReplicaSets, their pods, and when it last progressed."""

    pods: list[Pod]
    observed: int
    last_progress: float
    timed_out: bool = False
    reason: str = "NewReplicaSetAvailable"
    replica_sets: dict[str, ReplicaSet] = dataclasses.field(default_factory=dict)
    new: str = ""  # the name of the new ReplicaSet: the one whose template is the Deployment's


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    verb: str          # the RBAC verb the API server would authorize: get, list, watch, patch
    resource: str      # deployments, services/proxy
    namespace: str
    name: str          # the object's name in the path ("" for a list or watch)
    content_type: str
    authorization: str
    resource_name: str = ""  # the name RBAC authorizes: the path's, a list's or watch's metadata.name selector
    status: int = 0          # the HTTP status it was answered with


class KubeApiServer:
    """Start with `with KubeApiServer(tokens={"t"}) as api:`; `api.url`, `api.ca_pem` for the client."""

    def __init__(self, *, tokens: set[str] | None = None, tick_seconds: float = 0.01,
                 progress_deadline: float = 0.3, rules: dict[str, list[Rule]] | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.tokens = set(tokens or {"test-token"})
        self.rules: dict[str, list[Rule]] = dict(rules or {})   # token -> what it may do; absent: everything
        self.users: dict[str, str] = dict(users or {})          # token -> user name; absent: DEFAULT_USER
        self.tick_seconds = tick_seconds
        self.progress_deadline = progress_deadline
        self.behaviour: dict[str, str] = {}           # image -> "available" (default) | "never"
        self.versions: dict[str, dict[str, Any]] = {}  # image -> its /version document
        self.routes: dict[str, dict[str, Any]] = {}    # image -> {path: the JSON its app answers there}
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
                       replicas: int = 2, labels: dict[str, str] | None = None,
                       max_surge: int | str = "25%", max_unavailable: int | str = "25%",
                       annotations: dict[str, str] | None = None,
                       revision_history_limit: int = 10) -> dict[str, Any]:
        """A Deployment already rolled out: `replicas` ready pods of `image`, in its ReplicaSet of revision 1.
        A rolling update the API server would refuse (see _strategy_errors) is a ValueError."""
        labels = labels or {"app": name}
        body = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1,
                         "creationTimestamp": _now(), "labels": dict(labels), "annotations": dict(annotations or {})},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{"name": container, "image": image,
                                                           "ports": [{"containerPort": 5001, "protocol": "TCP"}]}]}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable}},
                     "revisionHistoryLimit": revision_history_limit, "progressDeadlineSeconds": 600},
            "status": {},
        }
        if problems := _strategy_errors(body["spec"]):
            raise ValueError("; ".join(f"{where}: {what}" for where, what in problems))
        with self._changed:
            key = (namespace, name)
            self.deployments[key] = body
            rollout = self._rollouts[key] = Rollout([], 1, time.monotonic())
            self._sync_replica_set(key)
            rollout.pods = [Pod(image, True, rollout.new) for _ in range(replicas)]
            self._compute_status(key)
            self._record(key, "ADDED")
        return copy.deepcopy(body)

    def add_service(self, namespace: str, name: str, *, selector: dict[str, str] | None = None,
                    port: int = 80, target_port: int = 5001, port_name: str | None = "http",
                    ports: list[dict[str, Any]] | None = None) -> None:
        """A ClusterIP Service: one port (`port_name` None: unnamed), or `ports` as the Service spec has them."""
        if ports is None:
            ports = [{"port": port, "targetPort": target_port, "protocol": "TCP"}]
            if port_name is not None:
                ports[0] = {"name": port_name, **ports[0]}
        self.services[(namespace, name)] = {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": selector or {"app": name}, "type": "ClusterIP", "ports": copy.deepcopy(ports)},
        }

    def image_of(self, namespace: str, name: str, container: str = "model-api") -> str:
        with self._changed:
            containers = self.deployments[(namespace, name)]["spec"]["template"]["spec"]["containers"]
            return next(c["image"] for c in containers if c["name"] == container)

    def pods(self, namespace: str, name: str) -> list[Pod]:
        with self._changed:
            return [dataclasses.replace(p) for p in self._rollouts[(namespace, name)].pods]

    def replica_sets(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Deployment's ReplicaSets by revision: name, revision, annotations, template, and their pods
        (replicas, ready)."""
        with self._changed:
            rollout = self._rollouts[(namespace, name)]
            return [{"name": rs.name, "revision": rs.revision, "annotations": dict(rs.annotations),
                     "template": copy.deepcopy(rs.template),
                     "replicas": sum(p.replica_set == rs.name for p in rollout.pods),
                     "ready": sum(p.replica_set == rs.name and p.ready for p in rollout.pods)}
                    for rs in sorted(rollout.replica_sets.values(), key=lambda rs: rs.revision)]

    def history(self, namespace: str, name: str) -> list[tuple[int, str | None]]:
        """What `kubectl rollout history` shows: (revision, change-cause) of each ReplicaSet, by revision."""
        return [(rs["revision"], rs["annotations"].get(CHANGE_CAUSE)) for rs in self.replica_sets(namespace, name)]

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

    def _sync_replica_set(self, key: tuple[str, str]) -> tuple[bool, str]:
        """Finds or makes the new ReplicaSet (the one whose template is the Deployment's), gives it the next
        revision when it was an old one, copies the Deployment's annotations onto it and sets the Deployment's
        revision annotation. (whether the Deployment changed, "created" | "reused" | "" for the same one)."""
        deployment, rollout = self.deployments[key], self._rollouts[key]
        template = deployment["spec"]["template"]
        new = next((rs for rs in rollout.replica_sets.values() if _without_hash(rs.template) == template), None)
        revision = max((rs.revision for rs in rollout.replica_sets.values() if rs is not new), default=0) + 1
        created = touched = new is None
        if new is None:
            pod_hash = _template_hash(template)
            labelled = copy.deepcopy(template)
            labelled.setdefault("metadata", {}).setdefault("labels", {})[TEMPLATE_HASH] = pod_hash
            new = ReplicaSet(f"{key[1]}-{pod_hash}", labelled, {REVISION: str(revision)})
            rollout.replica_sets[new.name] = new
        elif new.revision < revision:  # an old template again: its ReplicaSet comes back with a new revision
            old = new.annotations.get(REVISION)
            new.annotations[REVISION], touched = str(revision), True
            if old:
                history = new.annotations.get(REVISION_HISTORY)
                new.annotations[REVISION_HISTORY] = f"{history},{old}" if history else old
        for name, value in (deployment["metadata"].get("annotations") or {}).items():
            if name not in NOT_COPIED and new.annotations.get(name) != value:  # never removes one
                new.annotations[name], touched = value, True
        if touched:
            self._changed.notify_all()  # a ReplicaSet changed: wake wait_for(), even if the Deployment did not
        switched = "created" if created else "" if new.name == rollout.new else "reused"
        rollout.new = new.name
        annotations = deployment["metadata"].get("annotations")
        if annotations is None:
            annotations = deployment["metadata"]["annotations"] = {}
        changed = annotations.get(REVISION) != new.annotations[REVISION]
        annotations[REVISION] = new.annotations[REVISION]
        return changed, switched

    def _step(self, key: tuple[str, str]) -> bool:
        """One reconcile of one Deployment; True when its status (or its revision annotation) changed."""
        deployment, rollout = self.deployments[key], self._rollouts[key]
        now = time.monotonic()
        changed, switched = self._sync_replica_set(key)
        if switched:  # a rollout begins: of a new ReplicaSet, or of an old one again (a rollback)
            rollout.last_progress, rollout.timed_out = now, False
            rollout.reason = "NewReplicaSetCreated" if switched == "created" else "ReplicaSetUpdated"
        generation = deployment["metadata"]["generation"]
        if rollout.observed < generation:
            rollout.observed, changed = generation, True
        if changed or switched:
            return True
        replicas = deployment["spec"]["replicas"]
        surge, unavailable = _fenceposts(deployment)
        new_rs = rollout.replica_sets[rollout.new]
        image = _images(new_rs.template)
        new = [p for p in rollout.pods if p.replica_set == rollout.new]
        old = [p for p in rollout.pods if p.replica_set != rollout.new]
        available = sum(p.ready for p in rollout.pods)
        healthy = all(self.behaviour.get(each, "available") == "available" for each in image.split(","))
        waiting = next((p for p in new if not p.ready), None)
        if waiting is not None and healthy:
            waiting.ready = True
        elif any(not p.ready for p in old):
            rollout.pods.remove(next(p for p in old if not p.ready))
        elif len(new) < replicas and len(rollout.pods) < replicas + surge:
            rollout.pods.append(Pod(image, False, rollout.new))
        elif old and available - 1 >= replicas - unavailable and len(rollout.pods) > replicas - unavailable:
            rollout.pods.remove(old[0])
        elif len(new) > replicas:
            rollout.pods.remove(new[-1])
        else:
            complete = len(new) == replicas and not old and all(p.ready for p in new)
            if complete:
                self._clean_up(key)
            if complete and rollout.reason != "NewReplicaSetAvailable":
                rollout.reason, rollout.timed_out = "NewReplicaSetAvailable", False
                return True
            if not complete and not rollout.timed_out and now - rollout.last_progress > self.progress_deadline:
                rollout.timed_out, rollout.reason = True, "ProgressDeadlineExceeded"
                return True
            return False
        rollout.last_progress, rollout.reason, rollout.timed_out = now, "ReplicaSetUpdated", False
        return True

    def _clean_up(self, key: tuple[str, str]) -> None:
        """Deletes old ReplicaSets beyond spec.revisionHistoryLimit, the lowest revisions first, but only those
        scaled down to no pods (the controller's cleanupDeployment)."""
        deployment, rollout = self.deployments[key], self._rollouts[key]
        limit = deployment["spec"].get("revisionHistoryLimit")
        limit = 10 if limit is None else limit
        old = sorted((rs for rs in rollout.replica_sets.values() if rs.name != rollout.new),
                     key=lambda rs: rs.revision)
        for rs in old[:max(0, len(old) - limit)]:
            if not any(p.replica_set == rs.name for p in rollout.pods):
                del rollout.replica_sets[rs.name]
                self._changed.notify_all()

    def _compute_status(self, key: tuple[str, str]) -> None:
        deployment, rollout = self.deployments[key], self._rollouts[key]
        replicas = deployment["spec"]["replicas"]
        _, unavailable = _fenceposts(deployment)
        unavailable = 0 if replicas == 0 else min(unavailable, replicas)  # deploymentutil.MaxUnavailable
        ready = sum(p.ready for p in rollout.pods)
        replica_set = rollout.new
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
                   "updatedReplicas": sum(p.replica_set == rollout.new for p in rollout.pods),
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
            verb, resource, resource_name = "get", "services/proxy", name
        elif deployment:
            namespace, name = deployment[1], deployment[2] or ""
            resource = "deployments"
            verb = {"PATCH": "patch"}.get(method, "get" if name else
                                          "watch" if query.get("watch") in ("true", "1") else "list")
            resource_name = name or _selected_name(query.get("fieldSelector", ""))
        else:
            namespace = name = verb = resource = resource_name = ""
        authorization = handler.headers.get("Authorization", "")
        request = Request(method, verb, resource, namespace, name, handler.headers.get("Content-Type", ""),
                          authorization, resource_name)
        handler.on_reply = lambda code: self.requests.append(dataclasses.replace(request, status=code))
        try:
            token = _bearer(authorization)
            if token is None or token not in self.tokens:
                return handler.reply(401, status(401, "Unauthorized", "Unauthorized"))
            if resource and not self._allows(token, verb, resource, resource_name):
                return handler.reply(403, _forbidden(self.users.get(token, DEFAULT_USER), verb, resource,
                                                     namespace, resource_name))
            if proxy and method == "GET":
                return self._proxy(handler, namespace, name, proxy[3] or "/")
            if deployment and method == "GET" and name:
                return self._get(handler, (namespace, name))
            if deployment and method == "GET":
                return self._list_or_watch(handler, namespace, query)
            if deployment and method == "PATCH" and name:
                return self._patch(handler, (namespace, name))
            handler.reply(404, status(404, "NotFound", "the server could not find the requested resource"))
        except Exception as e:  # a fault of the fake itself: a 500 the test will show, not a dropped connection
            if not handler.replied:
                handler.reply(500, status(500, "InternalError", f"the fake API server failed: {e!r}"))
            raise

    def _allows(self, token: str, verb: str, resource: str, name: str) -> bool:
        """RBAC: a token without rules may do anything; else one rule must match verb, resource and name (a rule
        with a name never matches a request without one, such as a list without a metadata.name selector)."""
        rules = self.rules.get(token)
        if rules is None:
            return True
        return any(rule_verb in (verb, "*") and rule_resource in (resource, "*") and rule_name in (None, name)
                   for rule_verb, rule_resource, rule_name in rules)

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
                return handler.reply(422, _invalid(key[1], [("spec.template.spec.containers", "Required value")]))
            if problems := _strategy_errors(updated["spec"]):
                return handler.reply(422, _invalid(key[1], problems))
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
        name = _selected_name(selector) or None
        if selector and (name is None or "," in selector):
            return handler.reply(400, status(400, "BadRequest", f'"{selector}" is not a known field selector'))
        wanted = lambda key: key[0] == namespace and (name is None or key[1] == name)
        with self._changed:
            items = [copy.deepcopy(d) for k, d in self.deployments.items() if wanted(k)]
            version = self._version
        if query.get("watch") not in ("true", "1"):
            return handler.reply(200, {"kind": "DeploymentList", "apiVersion": "apps/v1",
                                       "metadata": {"resourceVersion": str(version)}, "items": items})
        try:
            timeout = watch_timeout(query)
        except ValueError as e:
            return handler.reply(400, status(400, "BadRequest", str(e)))
        since = query.get("resourceVersion", "")
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
        """The service proxy's ResourceLocation: which pod `[scheme:]name[:port]` reaches, or its error."""
        parts = target.split(":")  # "name", "name:port" or "scheme:name:port" (utilnet.SplitSchemeNamePort)
        scheme, name, port = {1: ["", *parts, ""], 2: ["", *parts], 3: parts}.get(len(parts), ["", "", ""])
        if not name or scheme not in ("", "http", "https"):
            return handler.reply(400, status(400, "BadRequest", f'invalid service request "{target}"'))
        with self._changed:
            service = self.services.get((namespace, name))
            port_name = port
            if re.fullmatch(r"[+-]?[0-9]+", port):  # a port number stands for that port's name
                if service is None:
                    return handler.reply(404, status(404, "NotFound", f'services "{name}" not found',
                                                     name=name, kind="services"))
                match = next((p for p in service["spec"]["ports"] if p["port"] == int(port)), None)
                if match is None:
                    return handler.reply(503, status(503, "ServiceUnavailable",
                                                     f'no service port {int(port)} found for service "{name}"'))
                port_name = match.get("name", "")
            if service is None:
                return handler.reply(404, status(404, "NotFound", f'endpoints "{name}" not found',
                                                 name=name, kind="endpoints"))
            selector = service["spec"]["selector"]
            selected = [p for key, rollout in self._rollouts.items() if key[0] == namespace for p in rollout.pods
                        if selector.items() <= _labels(rollout, p).items()]
            if not selected:  # an Endpoints object without subsets
                return handler.reply(503, status(503, "ServiceUnavailable",
                                                 f'no endpoints available for service "{name}"'))
            ready = [p for p in selected if p.ready]
            if not ready or not any(p.get("name", "") == port_name for p in service["spec"]["ports"]):
                return handler.reply(503, status(503, "ServiceUnavailable",
                                                 f'no endpoints available for service "{target}"'))
            self._round_robin += 1
            pod = ready[self._round_robin % len(ready)]
            version = next((self.versions[each] for each in pod.image.split(",") if each in self.versions), None)
            routes = next((self.routes[each] for each in pod.image.split(",") if each in self.routes), {})
        if path in routes:
            return handler.reply(200, routes[path])
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
    replied = False

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle/delayed-ACK stalls

    def on_reply(self, code: int) -> None:
        """Told the status of each reply before it is sent (the API server records the request then)."""

    def do_GET(self) -> None:
        self._body, self.replied = None, False  # one handler serves every request of a kept-alive connection
        self.server.api.handle(self, "GET")

    def do_PATCH(self) -> None:
        self._body, self.replied = None, False
        self.server.api.handle(self, "PATCH")

    def body(self) -> bytes:
        """The request's body, read once (a reply reads it too, so that the connection can be reused)."""
        if self._body is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(length) if length else b""
        return self._body

    def reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()  # compact, as Go writes it
        self.body()
        self.replied = True
        self.on_reply(code)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, events: Iterator[dict[str, Any]]) -> None:
        """A watch: chunked transfer encoding, one event a line, flushed as it happens; the terminating chunk
        when the events end (the watch's timeout)."""
        self.replied = True
        self.on_reply(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _images(template: dict[str, Any]) -> str:
    """What the fake's pods run: a template's containers' images, comma-separated (one image: that image)."""
    return ",".join(c["image"] for c in template["spec"]["containers"])


def _image(deployment: dict[str, Any]) -> str:
    return _images(deployment["spec"]["template"])


def _template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's template as the Deployment's would be: without the pod-template-hash label."""
    bare = copy.deepcopy(template)
    labels = bare.get("metadata", {}).get("labels", {})
    labels.pop(TEMPLATE_HASH, None)
    return bare


def _labels(rollout: Rollout, pod: Pod) -> dict[str, str]:
    """A pod's labels: its ReplicaSet's template's."""
    replica_set = rollout.replica_sets.get(pod.replica_set)
    return ((replica_set.template.get("metadata") or {}).get("labels") or {}) if replica_set else {}


def _fenceposts(deployment: dict[str, Any]) -> tuple[int, int]:
    """The Deployment's own (surge, unavailable): spec.strategy.rollingUpdate, 25% each when unset."""
    rolling = (deployment["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    return resolve_fenceposts(rolling.get("maxSurge", "25%"), rolling.get("maxUnavailable", "25%"),
                              deployment["spec"]["replicas"])


def _strategy_errors(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """What the API server's validation says of spec.strategy.rollingUpdate: (field, detail) pairs."""
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    where = "spec.strategy.rollingUpdate."
    problems, values = [], {}
    for field in ("maxSurge", "maxUnavailable"):
        value = rolling.get(field, "25%")
        if isinstance(value, bool) or not isinstance(value, int | str):
            problems.append((where + field, f"Invalid value: {json.dumps(value)}: must be an integer or percentage "
                                            "(e.g '5%')"))
        elif isinstance(value, str) and not PERCENT.fullmatch(value):
            problems.append((where + field, f"Invalid value: {json.dumps(value)}: a valid percent string must be a "
                                            "numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex "
                                            "used for validation is '[0-9]+%')"))
        elif isinstance(value, int) and value < 0:
            problems.append((where + field, f"Invalid value: {value}: must be greater than or equal to 0"))
        else:
            values[field] = int(value.rstrip("%")) if isinstance(value, str) else value
    if values.get("maxSurge") == 0 and values.get("maxUnavailable") == 0:
        problems.append((where + "maxUnavailable", f"Invalid value: {json.dumps(rolling.get('maxUnavailable'))}: "
                                                   "may not be 0 when `maxSurge` is 0"))
    unavailable = rolling.get("maxUnavailable", "25%")
    if isinstance(unavailable, str) and "maxUnavailable" in values and values["maxUnavailable"] > 100:
        problems.append((where + "maxUnavailable", f"Invalid value: {json.dumps(unavailable)}: must not be greater "
                                                   "than 100%"))
    return problems


def _selected_name(selector: str) -> str:
    """The name a field selector pins down (`metadata.name=X`, or `==`), as the API server's request info
    takes it for authorization; "" for none, or for a name that cannot be a path segment."""
    for term in selector.split(","):
        field, operator, value = re.fullmatch(r"([^!=]*)(==|=|!=)?(.*)", term).groups()
        if field == "metadata.name" and operator in ("=", "==") and value not in (".", "..") \
                and not set(value) & {"/", "%"}:
            return value
    return ""


def _bearer(authorization: str) -> str | None:
    """The token of `Authorization: Bearer <token>` (the scheme in any case), None for anything else."""
    parts = authorization.split(" ", 2)
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


def _forbidden(user: str, verb: str, resource: str, namespace: str, name: str) -> dict[str, Any]:
    """The 403 the API server answers when no rule allows a request (its Forbidden and NewForbidden)."""
    group, kind = GROUPS[resource], resource.partition("/")[0]
    qualified = f"{kind}.{group}" if group else kind
    why = (f'User "{user}" cannot {verb} resource "{resource}" in API group "{group}" '
           f'in the namespace "{namespace}"')
    message = f'{qualified} "{name}" is forbidden: {why}' if name else f"{qualified} is forbidden: {why}"
    details = {k: v for k, v in (("name", name), ("group", group), ("kind", kind)) if v}
    return status(403, "Forbidden", message, **details)


def _invalid(name: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    """A 422 Invalid Status of a Deployment, one cause per (field, detail)."""
    each = [f"{where}: {what}" for where, what in problems]
    message = f'Deployment.apps "{name}" is invalid: ' + (each[0] if len(each) == 1 else f"[{', '.join(each)}]")
    causes = [{"reason": "FieldValueRequired" if what == "Required value" else "FieldValueInvalid",
               "message": what, "field": where} for where, what in problems]
    return status(422, "Invalid", message, name=name, group="apps", kind="Deployment", causes=causes)


def _not_found(name: str) -> dict[str, Any]:
    return status(404, "NotFound", f'deployments.apps "{name}" not found', name=name, group="apps",
                  kind="deployments")


def _conflict(name: str) -> dict[str, Any]:
    return status(409, "Conflict", f'Operation cannot be fulfilled on deployments.apps "{name}": the object has been '
                  "modified; please apply your changes to the latest version and try again",
                  name=name, group="apps", kind="deployments")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
