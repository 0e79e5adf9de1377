"""A protocol-faithful fake of the ARM endpoint of ACR Tasks, for AcrTasksBuilder and AcrTaskSmokeRunner tests.

A real HTTPS server on 127.0.0.1 in a thread (a self-signed certificate made at start with `cryptography`; the
client trusts it through azure-core's `connection_verify=<the PEM>`, so bearer tokens travel over TLS as
azure-core demands), spoken to by the real azure-mgmt-containerregistrytasks client. It serves the operations
of api-version 2025-03-01-preview that the adapters use, with the wire shapes of the SDK's models (camelCase
keys, `properties` envelopes, ARM's `{"error": {"code", "message"}}`):

    POST .../registries/{r}/listBuildSourceUploadUrl   SourceUploadDefinition: a real Azurite blob SAS URL
    POST .../registries/{r}/scheduleRun                DockerBuildRequest | EncodedTaskRunRequest -> Run (200)
    GET  .../registries/{r}/runs/{runId}               Run; 404 ResourceNotFound for ids it never gave
    POST .../registries/{r}/runs/{runId}/listLogSasUrl RunGetLogResult: a real Azurite SAS URL of the log blob
    POST .../registries/{r}/runs/{runId}/cancel        200; the run reads Canceled

It checks what ARM checks that matters here: the bearer token, the api-version, the resource path, the request
type and required fields, the run timeout's range (300..28800 s), that a build's sourceLocation was given out
by listBuildSourceUploadUrl and uploaded, and that an encoded task is base64 YAML with steps (each an id and
one of cmd, build, push; a task with a build step needs an uploaded sourceLocation too).

What a run does is the test's choice, per run: an `Outcome` (succeed with a digest, fail with an error and a
log, time out, never finish), applied at schedule time and revealed over the next GETs (Queued, Running, then
the outcome), or an executor that really runs it (tests/fakes/arm_acr_docker.py: the local Docker engine).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import http.server
import ipaddress
import json
import re
import ssl
import subprocess
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx
import yaml
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from shared import settings
from shared.adapters.azure import acr_runs

ROOT = Path(__file__).resolve().parents[2]
AZURITE_BLOB = "http://127.0.0.1:10000/devstoreaccount1"
AZURITE_KEY = re.search(r"AccountKey=([^;]+)", settings.AZURITE)[1]  # Azurite's well-known account key
SUBSCRIPTION = "00000000-0000-0000-0000-00000000a11c"
RESOURCE_GROUP, REGISTRY = "rg-shipbot", "shipbotacr"
SOURCES, LOGS = "acr-fake-sources", "acr-fake-logs"
_PATH = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
                   r"Microsoft\.ContainerRegistry/registries/(?P<registry>[^/]+)/(?P<rest>.+)$")


class StaticToken:
    """A TokenCredential with one fixed token: what tests hand azure-core (the fake checks it)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(dt.datetime.now(dt.UTC).timestamp()) + 3600)


# -- runs and outcomes --------------------------------------------------------------------------------------------
STEP_KINDS = {"cmd", "build", "push"}  # what one step of a multi-step task does
_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_ALIAS = re.compile(r"\$(\$|[A-Za-z_][A-Za-z0-9_]*)")


def render(run_id: str, text: str) -> str:
    """What ACR's agent makes of a task file's raw text before it reads it as YAML: Go templating (this fake
    knows {{.Run.ID}}, {{.Run.Registry}} and the raw string {{`...`}}; any other action fails, as an unknown
    one fails the run), then the `$` aliases of task version v1.1.0 ($ID, $Registry; `$$` is a `$`; any
    other alias fails here, where the agent would substitute or mangle it)."""
    values = {".Run.ID": run_id, ".Run.Registry": "{{.Run.Registry}}"}

    def action(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        if inner.startswith("`") and inner.endswith("`") and len(inner) >= 2:
            return inner[1:-1]
        if inner in values:
            return values[inner]
        raise ValueError(f"template: unknown action {{{{{inner[:40]}}}}}")

    def alias(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        if match.group(1) == "ID":
            return run_id
        raise ValueError(f"task alias ${match.group(1)} is not one this fake knows")

    return _ALIAS.sub(alias, _ACTION.sub(action, text))


@dataclasses.dataclass
class FakeRun:
    run_id: str
    kind: str                 # the request's type: DockerBuildRequest | EncodedTaskRunRequest
    request: dict[str, Any]   # the body as it came over the wire
    status: str = acr_runs.QUEUED
    created: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    output_images: list[dict[str, str]] = dataclasses.field(default_factory=list)
    error: str = ""
    log: str = ""
    reveal: list[str] = dataclasses.field(default_factory=list)  # statuses the next GETs show, one each
    final: str | None = None  # shown once `reveal` is used up

    @property
    def task(self) -> dict[str, Any]:
        """An encoded task's YAML, decoded and rendered as ACR's agent does before it parses it (render)."""
        return yaml.safe_load(render(self.run_id, base64.b64decode(self.request["encodedTaskContent"]).decode()))

    def finish(self, status: str, *, error: str | None = None, log: str | None = None,
               output_images: list[dict[str, str]] | None = None) -> None:
        now = dt.datetime.now(dt.UTC)
        self.started = self.started or now
        self.finished = now
        self.status = status
        if error is not None:
            self.error = error
        if log is not None:
            self.log = log
        if output_images is not None:
            self.output_images = output_images


Outcome = Callable[["FakeAcr", FakeRun], None]


def succeed(digest: str | None = None, *, log: str = "Run succeeded\n") -> Outcome:
    """A build pushes its images (digest: given, or the sha256 of the uploaded context and args)."""
    def apply(fake: FakeAcr, run: FakeRun) -> None:
        images = []
        for name in run.request.get("imageNames") or []:
            repository, _, tag = name.rpartition(":")
            image_digest = digest or "sha256:" + hashlib.sha256(
                fake.source_bytes(run.request["sourceLocation"]) + json.dumps(run.request["arguments"]).encode()
            ).hexdigest()
            images.append({"registry": fake.login_server, "repository": repository, "tag": tag,
                           "digest": image_digest})
            fake.images[(repository, tag)] = image_digest
        fake.reveal(run, acr_runs.SUCCEEDED, log=log, output_images=images)
    return apply


def fail(error: str = "failed during run, err: exit status 1", *, log: str = "") -> Outcome:
    def apply(fake: FakeAcr, run: FakeRun) -> None:
        fake.reveal(run, acr_runs.FAILED, error=error, log=log)
    return apply


def finish(status: str, *, log: str = "", error: str = "") -> Outcome:
    """Any final status with the given log (an encoded task's verdict lines, for instance)."""
    def apply(fake: FakeAcr, run: FakeRun) -> None:
        fake.reveal(run, status, error=error, log=log)
    return apply


def time_out(*, log: str = "") -> Outcome:
    """ACR's own run timeout: the run ends as Timeout."""
    return finish(acr_runs.TIMEOUT, log=log, error="run timed out")


def never_finish(status: str = acr_runs.RUNNING) -> Outcome:
    def apply(fake: FakeAcr, run: FakeRun) -> None:
        run.reveal, run.final = [], status
        if status != acr_runs.QUEUED:
            run.started = dt.datetime.now(dt.UTC)
        run.status = status
        fake.write_log(run)
    return apply


# -- the server ---------------------------------------------------------------------------------------------------
class FakeAcr:
    def __init__(self, *, outcome: Outcome | None = None, login_server: str = "shipbotacr.azurecr.test",
                 token: str | None = None) -> None:
        self.outcome: Outcome = outcome or succeed()
        self.login_server = login_server
        self.token = token or f"fake-arm-token-{uuid.uuid4().hex}"
        self.credential = StaticToken(self.token)
        self.runs: dict[str, FakeRun] = {}
        self.images: dict[tuple[str, str], str] = {}  # (repository, tag) -> digest, what succeeded runs pushed
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.refuse: list[tuple[int, str]] = []  # the next requests answer these ARM errors, one each
        self.spoil_upload_sas = False  # hand out upload URLs whose signature storage refuses
        self.lock = threading.Lock()
        self._sources: dict[str, str] = {}  # relativePath -> blob name
        self._counter = 0
        self._instance = uuid.uuid4().hex[:12]  # run ids restart at cf1 in every fake: logs live under its own folder
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-arm-")
        ensure_azurite()
        self.blobs = BlobServiceClient(AZURITE_BLOB, credential={"account_name": "devstoreaccount1",
                                                                 "account_key": AZURITE_KEY})
        for name in (SOURCES, LOGS):
            container = self.blobs.get_container_client(name)
            if not container.exists():
                with contextlib.suppress(ResourceExistsError):  # another test made it first
                    container.create_container()
        self.ca_file = _self_signed(Path(self._tmp.name))
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, Path(self._tmp.name, "key.pem"))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-arm", daemon=True)
        self._thread.start()

    def client(self, **options: Any):
        """The real SDK client, pointed at this server, trusting its certificate."""
        options.setdefault("connection_verify", str(self.ca_file))
        options.setdefault("retry_total", 0)
        return acr_runs.tasks_client(self.credential, SUBSCRIPTION, endpoint=self.url, **options)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what tests look at and drive --------------------------------------------------------------------------
    def run(self, run_id: str) -> FakeRun:
        with self.lock:
            return self.runs[run_id]

    def last_run(self) -> FakeRun:
        with self.lock:
            return list(self.runs.values())[-1]

    @property
    def host(self) -> str:
        return self.login_server

    def get_image(self, repository: str, reference: str):
        """The Registry port over what this fake's succeeded runs pushed (ACR is the registry, too)."""
        from shared import errors, ports

        digest = reference if reference.startswith("sha256:") else self.images.get((repository, reference))
        if digest is None or digest not in self.images.values():
            raise errors.NotFound(f"image {repository}:{reference} is not in the registry")
        return ports.Image(repository=f"{self.login_server}/{repository}", digest=digest)

    def source_bytes(self, relative_path: str) -> bytes:
        return self.blobs.get_blob_client(SOURCES, self._sources[relative_path]).download_blob().readall()

    def source_blob(self, relative_path: str):
        return self.blobs.get_blob_client(SOURCES, self._sources[relative_path])

    def reveal(self, run: FakeRun, status: str, *, error: str = "", log: str = "",
               output_images: list[dict[str, str]] | None = None) -> None:
        """The run ends as `status`, which GETs show after one Running."""
        run.reveal, run.final = [acr_runs.RUNNING], status
        run.error, run.log = error, log
        run.output_images = output_images or []
        self.write_log(run)

    def log_blob(self, run_id: str) -> str:
        return f"{self._instance}/{run_id}/rawtext.log"

    def write_log(self, run: FakeRun) -> None:
        self.blobs.get_blob_client(LOGS, self.log_blob(run.run_id)).upload_blob(run.log.encode(), overwrite=True)

    # -- operations --------------------------------------------------------------------------------------------
    def upload_url(self) -> tuple[int, dict[str, Any]]:
        day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        name = f"{day}/{uuid.uuid4().hex}.tar.gz"
        relative = f"source/{name}"
        with self.lock:
            self._sources[relative] = name
        url = self._sas(SOURCES, name, BlobSasPermissions(create=True, write=True))
        if self.spoil_upload_sas:
            url = re.sub(r"sig=[^&]+", "sig=c3BvaWxlZA%3D%3D", url)
        return 200, {"uploadUrl": url, "relativePath": relative}

    def schedule(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        kind = body.get("type")
        if kind not in ("DockerBuildRequest", "EncodedTaskRunRequest"):
            return _arm_error(400, "InvalidRequestContent", f"unsupported run request type {kind!r}")
        platform = body.get("platform") or {}
        if not platform.get("os"):
            return _arm_error(400, "InvalidRequestContent", "platform.os is required")
        timeout = body.get("timeout", 3600)
        if not isinstance(timeout, int) or not 300 <= timeout <= 28800:
            return _arm_error(400, "InvalidParameter", "timeout must be between 300 and 28800 seconds")
        if kind == "DockerBuildRequest":
            if not body.get("dockerFilePath"):
                return _arm_error(400, "InvalidRequestContent", "dockerFilePath is required")
            source = body.get("sourceLocation", "")
            if source not in self._sources or not self.source_blob(source).exists():
                return _arm_error(400, "InvalidParameter", "sourceLocation was not uploaded")
        else:
            try:
                task = yaml.safe_load(base64.b64decode(body.get("encodedTaskContent") or "", validate=True))
                steps = task["steps"] if isinstance(task, dict) else None
            except (ValueError, KeyError, yaml.YAMLError):
                steps = None
            if not isinstance(steps, list) or not steps or not all(
                    isinstance(step, dict) and "id" in step and len(STEP_KINDS & step.keys()) == 1 for step in steps):
                return _arm_error(400, "InvalidRequestContent", "encodedTaskContent is not a task with steps")
            source = body.get("sourceLocation")
            if any("build" in step for step in steps) and (
                    source not in self._sources or not self.source_blob(source).exists()):
                return _arm_error(400, "InvalidParameter", "a build step needs an uploaded sourceLocation")
        with self.lock:
            self._counter += 1
            run = FakeRun(run_id=f"cf{self._counter}", kind=kind, request=body)
            self.runs[run.run_id] = run
        self.write_log(run)
        self.outcome(self, run)
        return 200, self.wire(run, advance=False)

    def get(self, run_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            run = self.runs.get(run_id)
        if run is None:
            return _arm_error(404, "ResourceNotFound", f"run {run_id} not found")
        return 200, self.wire(run, advance=True)

    def log_link(self, run_id: str) -> tuple[int, dict[str, Any]]:
        if run_id not in self.runs:
            return _arm_error(404, "ResourceNotFound", f"run {run_id} not found")
        link = self._sas(LOGS, self.log_blob(run_id), BlobSasPermissions(read=True))
        return 200, {"logLink": link, "logArtifactLink": ""}

    def cancel(self, run_id: str) -> tuple[int, dict[str, Any] | None]:
        with self.lock:
            run = self.runs.get(run_id)
        if run is None:
            return _arm_error(404, "ResourceNotFound", f"run {run_id} not found")
        if run.status in acr_runs.IN_FLIGHT or run.final in acr_runs.IN_FLIGHT:
            run.reveal, run.final = [], None
            run.finish(acr_runs.CANCELED, error="run canceled")
        return 200, None

    def wire(self, run: FakeRun, *, advance: bool) -> dict[str, Any]:
        """The Run as ARM sends it; a GET (`advance`) moves the run one revealed status on."""
        with self.lock:
            if advance and run.reveal:
                run.status = run.reveal.pop(0)
                if run.status == acr_runs.RUNNING and run.started is None:
                    run.started = dt.datetime.now(dt.UTC)
            elif advance and run.final is not None and run.status != run.final:
                run.finish(run.final)
            properties: dict[str, Any] = {
                "runId": run.run_id, "status": run.status, "lastUpdatedTime": _time(dt.datetime.now(dt.UTC)),
                "runType": "QuickBuild" if run.kind == "DockerBuildRequest" else "QuickRun",
                "createTime": _time(run.created), "platform": run.request.get("platform"),
                "agentConfiguration": run.request.get("agentConfiguration"), "provisioningState": "Succeeded",
                "isArchiveEnabled": bool(run.request.get("isArchiveEnabled")),
            }
            if run.started:
                properties["startTime"] = _time(run.started)
            if run.finished:
                properties["finishTime"] = _time(run.finished)
            if run.output_images:
                properties["outputImages"] = run.output_images
            if run.error and run.status not in acr_runs.IN_FLIGHT:
                properties["runErrorMessage"] = run.error
        return {"id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                      f"Microsoft.ContainerRegistry/registries/{REGISTRY}/runs/{run.run_id}",
                "name": run.run_id, "type": "Microsoft.ContainerRegistry/registries/runs", "properties": properties}

    def _sas(self, container: str, blob: str, permission: BlobSasPermissions) -> str:
        token = generate_blob_sas("devstoreaccount1", container, blob, account_key=AZURITE_KEY,
                                  permission=permission, expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        return f"{AZURITE_BLOB}/{container}/{urllib.parse.quote(blob)}?{token}"


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: FakeAcr
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._send(*_arm_error(400, "InvalidRequestContent", "the body is not JSON"))
        with self.fake.lock:
            self.fake.requests.append((method, url.path, body))
        with self.fake.lock:
            refused = self.fake.refuse.pop(0) if self.fake.refuse else None
        if refused:
            return self._send(*_arm_error(refused[0], refused[1], "refused by the test"))
        if self.headers.get("Authorization") != f"Bearer {self.fake.token}":
            return self._send(*_arm_error(401, "InvalidAuthenticationToken", "the access token is invalid"))
        version = urllib.parse.parse_qs(url.query).get("api-version", [""])[0]
        if version != acr_runs.API_VERSION:
            return self._send(*_arm_error(400, "InvalidApiVersionParameter", f"api-version {version!r}"))
        match = _PATH.match(url.path)
        if not match or (match["sub"], match["rg"].lower(), match["registry"]) != (SUBSCRIPTION, RESOURCE_GROUP.lower(),
                                                                              REGISTRY):
            return self._send(*_arm_error(404, "ResourceNotFound", "no such registry"))
        rest = match["rest"].split("/")
        if method == "POST" and rest == ["listBuildSourceUploadUrl"]:
            return self._send(*self.fake.upload_url())
        if method == "POST" and rest == ["scheduleRun"]:
            return self._send(*self.fake.schedule(body))
        if method == "GET" and len(rest) == 2 and rest[0] == "runs":
            return self._send(*self.fake.get(rest[1]))
        if method == "POST" and len(rest) == 3 and rest[0] == "runs" and rest[2] == "listLogSasUrl":
            return self._send(*self.fake.log_link(rest[1]))
        if method == "POST" and len(rest) == 3 and rest[0] == "runs" and rest[2] == "cancel":
            return self._send(*self.fake.cancel(rest[1]))
        return self._send(*_arm_error(404, "NotFound", f"no operation {method} {url.path}"))

    def _send(self, status: int, payload: dict[str, Any] | None) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)


def _arm_error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message}}


def _time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _self_signed(folder: Path) -> Path:
    """A key and a self-signed certificate for 127.0.0.1 and localhost; returns the certificate's PEM path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-arm.localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    path = folder / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def ensure_azurite() -> None:
    """Azurite answers, or is started with `bash scripts/local-stack.sh azurite` (as tests/contract does)."""
    def answers() -> bool:
        try:
            httpx.get(f"{AZURITE_BLOB}?comp=list", timeout=2)
        except httpx.HTTPError:
            return False
        return True

    if answers():
        return
    run = subprocess.run(["bash", str(ROOT / "scripts/local-stack.sh"), "azurite"], check=False,
                         capture_output=True, text=True, timeout=300)
    if run.returncode != 0 or not answers():
        raise RuntimeError(f"Azurite does not answer on {AZURITE_BLOB}: {run.stderr[-2000:]}")


