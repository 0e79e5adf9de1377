"""A protocol-faithful fake of an Azure ML workspace's model registry and artifact services, for MlflowModels
with azureml:// artifact URIs (shared/adapters/azureml_artifacts.py).

It stands in for what cannot run here: the workspace's MLflow endpoint
(`https://<host>/mlflow/v2.0/<workspace>/api/2.0/mlflow/...`), the run-history service and the artifact service.
It serves them over HTTPS on 127.0.0.1 (tests/fakes/selfsigned.py; the adapter's httpx client trusts the
certificate), checks the bearer token on every call, and answers with the wire shapes azureml-mlflow's REST
clients read:

    MLflow REST (the subset the adapter calls): registered-models/search, registered-models/alias,
        model-versions/search | get | get-download-uri | set-tag, runs/get; errors as MLflow's
        {"error_code", "message"}
    GET /history/v1.0/<workspace>/experiments/<e>/runs/<r>/artifacts          {"value": [{"path", ...}],
    GET /artifact/v2.0/<workspace>/artifacts/<origin>/<container>               "nextLink"}, `page` per page
    GET .../contentinfo?path=<path>    {"contentUri": a real Azurite read SAS URL, "path", ...}; 404 as Azure's
                                       {"error": {"code", "message"}}

The bytes live in real Azurite blobs (container `azureml-fake-artifacts`), so the content is read by the real
azure-storage-blob client from a real SAS URL, as in Azure. A model registered from a run gets the run
artifact URI Azure ML gives (`azureml://<host>/mlflow/v2.0/<workspace>/experiments/<e>/runs/<r>/artifacts/
<path>`); one registered from local files `azureml://artifacts/LocalUpload/<container>/<name>`, as
azureml-mlflow makes it. `fail` queues statuses for the next calls to a path (503: a transient failure).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from tests.fakes.arm_acr import AZURITE_BLOB, AZURITE_KEY

WORKSPACE = ("/subscriptions/00000000-0000-0000-0000-0000000a2e11/resourceGroups/rg-ml/providers/"
             "Microsoft.MachineLearningServices/workspaces/mlw-shipbot")
CONTAINER = "azureml-fake-artifacts"
_MLFLOW = re.compile(r"/mlflow/v2\.0(?P<ws>/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                     r"Microsoft\.MachineLearningServices/workspaces/[^/]+)/api/2\.0/mlflow/(?P<op>.+)")
_HISTORY = re.compile(r"/history/v1\.0(?P<ws>/.+?)/experiments/(?P<e>[^/]+)/runs/(?P<r>[^/]+)/artifacts"
                      r"(?P<info>/contentinfo)?")
_ARTIFACT = re.compile(r"/artifact/v2\.0(?P<ws>/.+?)/artifacts/(?P<origin>[^/]+)/(?P<container>[^/]+)"
                       r"(?P<info>/contentinfo)?")


@dataclasses.dataclass
class Version:
    name: str
    version: str
    source: str
    run_id: str = ""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    created: int = dataclasses.field(default_factory=lambda: int(time.time() * 1000))


class Workspace:
    """State shared by the handler threads; the test registers versions through it."""

    def __init__(self, *, token: str, page: int = 100) -> None:
        self.token, self.page = token, page
        self.host = ""  # 127.0.0.1:<port>, once serving
        self.versions: dict[tuple[str, str], Version] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.runs: dict[str, str] = {}                        # run id -> experiment id
        self.containers: dict[tuple[str, str], list[str]] = {}  # (origin, container) -> its artifact paths
        self.requests: list[str] = []
        self.failures: list[tuple[int, str]] = []  # (status, a piece of the path it answers)
        self.expired = 0  # the next contentinfo answers give SAS URLs that expired an hour ago
        self.denied = False  # every SAS URL lacks read permission: storage refuses it (as a firewall would)
        self.next_links = "absolute"  # or "relative" (path and query), or a host:port to send them to
        self.lock = threading.Lock()
        self.blobs = BlobServiceClient(AZURITE_BLOB, credential={"account_name": "devstoreaccount1",
                                                                 "account_key": AZURITE_KEY}
                                       ).get_container_client(CONTAINER)
        try:
            self.blobs.create_container()
        except ResourceExistsError:
            pass

    @property
    def tracking_uri(self) -> str:
        """What the workspace's `mlFlowTrackingUri` would be, over https (as the wiring calls it)."""
        return f"https://{self.host}/mlflow/v2.0{WORKSPACE}"

    # -- what a data scientist's tools do ---------------------------------------------------------------------
    def log_run(self, files: dict[str, bytes], *, under: str = "model") -> str:
        """A run whose artifacts hold `files` under `under`/, as mlflow.log_model writes them."""
        run_id = uuid.uuid4().hex
        self.runs[run_id] = uuid.uuid4().hex[:8]
        self._store("ExperimentRun", f"dcid.{run_id}", {f"{under}/{rel}": data for rel, data in files.items()})
        return run_id

    def add_run_file(self, run_id: str, path: str, data: bytes) -> None:
        self._store("ExperimentRun", f"dcid.{run_id}", {path: data})

    def run_artifacts(self, run_id: str) -> str:
        return f"azureml://{self.host}/mlflow/v2.0{WORKSPACE}/experiments/{self.runs[run_id]}/runs/{run_id}/artifacts"

    def upload_local(self, files: dict[str, bytes], *, name: str = "model") -> str:
        """A folder uploaded by azureml-mlflow's create_model_version from file://: its LocalUpload URI."""
        container = f"{dt.datetime.now(dt.UTC):%y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self._store("LocalUpload", container, {f"{name}/{rel}": data for rel, data in files.items()})
        return f"azureml://artifacts/LocalUpload/{container}/{name}"

    def register(self, name: str, source: str, *, run_id: str = "") -> str:
        with self.lock:
            number = str(1 + max((int(v) for n, v in self.versions if n == name), default=0))
            self.versions[(name, number)] = Version(name, number, source, run_id)
        return number

    def fail(self, *statuses: int, where: str = "/") -> None:
        """The next calls whose path contains `where` answer these statuses, one each."""
        with self.lock:
            self.failures.extend((status, where) for status in statuses)

    def _store(self, origin: str, container: str, files: dict[str, bytes]) -> None:
        for path, data in files.items():
            self.blobs.upload_blob(f"{origin}/{container}/{path}", data, overwrite=True)
        with self.lock:
            self.containers.setdefault((origin, container), []).extend(files)

    def sas(self, origin: str, container: str, path: str) -> str:
        blob = f"{origin}/{container}/{path}"
        with self.lock:
            expired, self.expired = self.expired > 0, max(0, self.expired - 1)
        token = generate_blob_sas("devstoreaccount1", CONTAINER, blob, account_key=AZURITE_KEY,
                                  permission=BlobSasPermissions(read=not self.denied, write=self.denied),
                                  expiry=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=-60 if expired else 10))
        return f"{AZURITE_BLOB}/{CONTAINER}/{urllib.parse.quote(blob)}?{token}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # self.server.ws is the Workspace (selfsigned.https_server sets it)

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        ws: Workspace = self.server.ws
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        with ws.lock:
            ws.requests.append(f"{method} {url.path}")
            failure = next((f for f in ws.failures if f[1] in url.path), None)
            if failure:
                ws.failures.remove(failure)
        if self.headers.get("Authorization") != f"Bearer {ws.token}":
            return self._azure_error(401, "AuthenticationFailed", "the bearer token is missing or wrong")
        if failure:
            return self._azure_error(failure[0], "ServiceUnavailable", "try again")
        if (match := _MLFLOW.fullmatch(url.path)) and match["ws"] == WORKSPACE:
            return self._mlflow(ws, method, match["op"], {**query, **body})
        for pattern, origin in ((_HISTORY, "ExperimentRun"), (_ARTIFACT, None)):
            if method == "GET" and (match := pattern.fullmatch(url.path)) and match["ws"] == WORKSPACE:
                if origin and ws.runs.get(match["r"]) != match["e"]:  # the route is keyed by the experiment too
                    return self._azure_error(404, "NotFound", f"no run {match['r']} in experiment {match['e']}")
                key = (origin, f"dcid.{match['r']}") if origin else (match["origin"], match["container"])
                return self._content_info(ws, key, query) if match["info"] else self._listing(ws, key, query)
        self._azure_error(404, "NotFound", f"no route {method} {url.path}")

    # -- MLflow's REST API ------------------------------------------------------------------------------------
    def _mlflow(self, ws: Workspace, method: str, op: str, args: dict[str, Any]) -> None:
        with ws.lock:
            versions = dict(ws.versions)
        if op == "registered-models/search":
            names = sorted({n for n, _ in versions})
            return self._json(200, {"registered_models": [{"name": n} for n in names]})
        if op == "model-versions/search":
            name = re.fullmatch(r"name='(.*)'", args.get("filter", ""))
            found = [v for (n, _), v in versions.items() if name and n == name[1]]
            return self._json(200, {"model_versions": [self._version(v) for v in found]})
        if op == "registered-models/alias":
            number = ws.aliases.get((args.get("name", ""), args.get("alias", "")))
            if number is None:
                return self._mlflow_error(404, "RESOURCE_DOES_NOT_EXIST", "no such alias")
            return self._json(200, {"model_version": self._version(versions[(args["name"], number)])})
        version = versions.get((str(args.get("name")), str(args.get("version"))))
        if op == "runs/get":
            if args.get("run_id") not in ws.runs:
                return self._mlflow_error(404, "RESOURCE_DOES_NOT_EXIST", "no such run")
            return self._json(200, {"run": {"info": {"run_id": args["run_id"],
                                                     "artifact_uri": ws.run_artifacts(args["run_id"])}}})
        if version is None:
            return self._mlflow_error(404, "RESOURCE_DOES_NOT_EXIST", "no such model version")
        if op == "model-versions/get":
            return self._json(200, {"model_version": self._version(version)})
        if op == "model-versions/get-download-uri":
            return self._json(200, {"artifact_uri": version.source})
        if op == "model-versions/set-tag" and method == "POST":
            with ws.lock:
                version.tags[str(args["key"])] = str(args["value"])
            return self._json(200, {})
        self._mlflow_error(404, "ENDPOINT_NOT_FOUND", f"no MLflow endpoint {op}")

    @staticmethod
    def _version(v: Version) -> dict[str, Any]:
        return {"name": v.name, "version": v.version, "source": v.source, "run_id": v.run_id, "status": "READY",
                "current_stage": "None", "creation_timestamp": v.created,
                "tags": [{"key": k, "value": value} for k, value in v.tags.items()]}

    # -- run history and artifact services --------------------------------------------------------------------
    def _listing(self, ws: Workspace, key: tuple[str, str], query: dict[str, str]) -> None:
        with ws.lock:
            paths = list(ws.containers.get(key, ()))
        start = int(query.get("continuationToken") or 0)
        page = paths[start:start + ws.page]
        doc: dict[str, Any] = {"value": [{"artifactId": f"{key[0]}/{key[1]}/{p}", "origin": key[0],
                                          "container": key[1], "path": p} for p in page]}
        if start + ws.page < len(paths):
            token = str(start + ws.page)
            doc["continuationToken"] = token
            link = f"{urllib.parse.urlsplit(self.path).path}?continuationToken={token}"
            doc["nextLink"] = link if ws.next_links == "relative" else \
                f"https://{ws.host if ws.next_links == 'absolute' else ws.next_links}{link}"
        self._json(200, doc)

    def _content_info(self, ws: Workspace, key: tuple[str, str], query: dict[str, str]) -> None:
        path = query.get("path", "")
        with ws.lock:
            known = path in ws.containers.get(key, ())
        if not known:
            return self._azure_error(404, "NotFound", f"no artifact {path} in {key[1]}")
        self._json(200, {"contentUri": ws.sas(*key, path), "origin": key[0], "container": key[1], "path": path})

    # -- answers ----------------------------------------------------------------------------------------------
    def _json(self, status: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _mlflow_error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error_code": code, "message": message})

    def _azure_error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error": {"code": code, "message": message}})
