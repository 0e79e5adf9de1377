"""MlflowModels: ports.Models on an MLflow Model Registry, through its REST API (the contract Azure ML workspaces
serve too, with Entra ID; locally a real `mlflow server`, scripts/local-stack.sh mlflow).

Which version of a registered model makes a release (`Selector`):
    alias   the version the alias points at (e.g. `champion`): moving the alias releases that version, with the
            rules every release follows (an older model whose release of the same commit exists is not rolled
            out again automatically: no automatic downgrade; `shipbot deploy` or `rollback` does that)
    stage   the highest version in that stage (`Staging`, `Production`; MLflow's older workflow)
    neither the highest version registered
Only READY versions count. `list_models` answers one version per name: the registry says which, not the
upload time of files.

Artifacts are read where the registry says they are: from the tracking server itself (`mlflow-artifacts:`, a
server run with --serve-artifacts), or from Azure ML's artifact services (`azureml:`, azureml_artifacts.py).

A version's model is its artifacts (an MLflow model folder: MLmodel, the weights, the input example), and
`Model.sha256` is their folder digest (shared.modelfiles.folder_digest), so a release is keyed by every byte of
them. It is computed once, by streaming the files, and cached on the version as the tag `shipbot.sha256`
(versions are immutable; `download` checks the digest again and corrects a tag that lies). A version whose
artifacts are missing, larger than `max_bytes`, or not an MLflow model ShipBot can serve is skipped with a
warning that says why; nothing is built of it.

Errors: connection failures, timeouts, 429 and 5xx are TransientError, retried here (tenacity, `sleep=` for
tests) before they reach the caller; 401/403 PermanentError; RESOURCE_DOES_NOT_EXIST NotFound. Messages name
the registry's path and status, never a token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
import tenacity
import yaml

from shared import errors, modelfiles
from shared.releases import Model

log = logging.getLogger(__name__)

ATTEMPTS = 4
SHA_TAG = "shipbot.sha256"
MAX_BYTES = 2 << 30          # the artifacts of one version, in all: larger is refused, not downloaded
MAX_FILES = 10_000
MAX_MLMODEL_BYTES = 1 << 20
CHUNK_BYTES = 1 << 20
PAGE = 100
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[^\x00-\x1f'\"\\]{1,256}")  # a registered model name the search filter can quote


@dataclasses.dataclass(frozen=True, slots=True)
class Selector:
    """Which version of each registered model a release is made of (at most one of alias and stage)."""

    alias: str | None = None
    stage: str | None = None


class MlflowModels:
    def __init__(self, *, uri: str, selector: Selector = Selector(), client: httpx.Client | None = None,
                 token: Callable[[], str] | None = None, max_bytes: int = MAX_BYTES,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`uri`: the tracking URI (http://127.0.0.1:5050, or Azure ML's https://<region>.api.azureml.ms/mlflow/
        v2.0/subscriptions/.../workspaces/<ws>); `token`: a bearer token's source (Azure ML), none locally."""
        self.uri = uri.rstrip("/")
        self.selector = selector
        self._client = client or httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))
        self._token = token
        self.max_bytes = max_bytes
        self._sleep = sleep

    # -- ports.Models -----------------------------------------------------------------------------------------
    def list_models(self, names: tuple[str, ...] = ()) -> list[Model]:
        """The version each of `names` releases (none: every registered model's), skipping those that cannot
        be released, with the reason logged."""
        found = []
        skipped = (errors.PermanentError, errors.NotFound, errors.InvalidEvent)  # that name, not the others
        for name in names or self._registered_names():
            try:
                version = self._selected(name)
            except skipped as e:
                log.warning("models: %s is skipped: %s", name[:64], e)
                continue
            if version is None:
                continue
            try:
                found.append(self._describe(version))
            except skipped as e:
                log.warning("models: %s/%s is skipped: %s", name, version.get("version"), e)
        return found

    def get_model(self, name: str, version: str) -> Model:
        return self._describe(self._version(name, version))

    def download(self, model: Model, destination: Path) -> None:
        destination.mkdir(parents=True, exist_ok=True)
        where, files = self._artifacts(model.name, model.version)
        digests, budget = [], _Budget(self.max_bytes, f"model {model.name}/{model.version}'s artifacts")
        for rel, _size in files:
            target = destination / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            digests.append((rel, self._fetch(where, rel, target, budget)))
        digest = modelfiles.folder_digest(d for d in digests if d[0] not in modelfiles.SIDECAR_FILES)
        if digest != model.sha256:
            self._tag(model.name, model.version, digest)  # the next listing names the version by its real bytes
            raise errors.PermanentError(f"model {model.name}/{model.version}: its artifacts hash to {digest[:12]}, "
                                        f"not the {model.sha256[:12]} the release was planned with")

    def read_file(self, model: Model, path: str, *, max_bytes: int) -> bytes:
        """An artifact of the run that logged the version (e.g. `eval/test.csv`, logged beside the model)."""
        if not _safe(path):
            raise errors.NotFound(f"{path[:80]!r} is not an artifact path")
        run_id = self._version(model.name, model.version).get("run_id")
        if not run_id:
            raise errors.NotFound(f"model {model.name}/{model.version} names no run to read {path} from")
        uri = self._get("runs/get", run_id=run_id)["run"]["info"]["artifact_uri"]
        try:
            where = self._where(uri)
        except errors.PermanentError as e:
            raise errors.PermanentError(f"the run of model {model.name}/{model.version}: {e}") from None
        try:
            return self._read(where, path, max_bytes, f"{path} of the run of model {model.name}/{model.version}")
        except errors.NotFound:
            raise errors.NotFound(f"the run of model {model.name}/{model.version} has no artifact {path}") from None

    # -- versions ---------------------------------------------------------------------------------------------
    def _registered_names(self) -> list[str]:
        return [m["name"] for m in self._pages("registered-models/search", "registered_models")]

    def _selected(self, name: str) -> dict[str, Any] | None:
        if not _NAME.fullmatch(name):
            raise errors.InvalidEvent(f"{name[:64]!r} is not a registered model name")
        if self.selector.alias:
            try:
                version = self._get("registered-models/alias", name=name, alias=self.selector.alias)["model_version"]
            except errors.NotFound:
                return None  # no such model, or the alias points nowhere (yet)
            return version if version.get("status") == "READY" else None
        candidates = [v for v in self._pages("model-versions/search", "model_versions", filter=f"name='{name}'")
                      if v.get("status") == "READY" and (self.selector.stage is None
                                                         or v.get("current_stage") == self.selector.stage)]
        return max(candidates, key=lambda v: int(v["version"]), default=None)

    def _version(self, name: str, version: str) -> dict[str, Any]:
        if not _NAME.fullmatch(name) or not version.isdigit():
            raise errors.InvalidEvent(f"{name[:64]!r} version {version[:16]!r} is not a registered model version")
        found = self._get("model-versions/get", name=name, version=version)["model_version"]
        if found.get("status") != "READY":
            raise errors.NotFound(f"model {name}/{version} is {found.get('status', 'not ready')}")
        return found

    def _describe(self, version: dict[str, Any]) -> Model:
        name, number = version["name"], str(version["version"])
        tags = {t.get("key"): t.get("value") for t in version.get("tags") or ()}
        sha = tags.get(SHA_TAG) or ""
        if not _SHA256.fullmatch(sha):
            sha = self._fingerprint(name, number)
            self._tag(name, number, sha)
        created = datetime.fromtimestamp(int(version.get("creation_timestamp") or 0) / 1000, UTC)
        return Model(name=name, version=number, sha256=sha, blob_name=f"models:/{name}/{number}", uploaded=created)

    def _fingerprint(self, name: str, version: str) -> str:
        """The folder digest of the version's artifacts, streamed (never whole in memory), after checking that
        they are an MLflow model ShipBot can serve."""
        where, files = self._artifacts(name, version)
        sizes = dict(files)
        if modelfiles.MLMODEL not in sizes:
            raise errors.PermanentError(f"model {name}/{version} has no {modelfiles.MLMODEL} among its artifacts: "
                                        "it is not an MLflow model")
        mlmodel = self._read(where, modelfiles.MLMODEL, MAX_MLMODEL_BYTES,
                             f"model {name}/{version}'s {modelfiles.MLMODEL} (a few KB at most)")
        try:
            doc = yaml.safe_load(mlmodel)
            if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
                raise ValueError(f"{modelfiles.MLMODEL} has no `flavors` mapping")
            weights = modelfiles.flavour(doc).path  # normalised: ./model.pkl is model.pkl
        except (ValueError, yaml.YAMLError) as e:
            raise errors.PermanentError(f"model {name}/{version}: {e}") from None
        if weights not in sizes:
            raise errors.PermanentError(f"model {name}/{version}: MLmodel names {weights} as the model, and the "
                                        "artifacts have no such file")
        budget = _Budget(self.max_bytes, f"model {name}/{version}'s artifacts")
        return modelfiles.folder_digest(
            (rel, hashlib.sha256(mlmodel).hexdigest() if rel == modelfiles.MLMODEL else
             self._fetch(where, rel, None, budget)) for rel, _ in files if rel not in modelfiles.SIDECAR_FILES)

    def _tag(self, name: str, version: str, sha: str) -> None:
        try:
            self._call("POST", "model-versions/set-tag", json={"name": name, "version": version, "key": SHA_TAG,
                                                               "value": sha})
        except errors.PermanentError as e:  # a registry that lets us read but not tag: hashed again next time
            log.warning("models: could not cache the sha256 of %s/%s: %s", name, version, e)

    # -- artifacts --------------------------------------------------------------------------------------------
    def _artifacts(self, name: str, version: str) -> tuple[_Artifacts, list[tuple[str, int | None]]]:
        """Where the version's artifacts are and every file there, (relative path, size when the store says),
        checked against the limits."""
        uri = self._get("model-versions/get-download-uri", name=name, version=version)["artifact_uri"]
        try:
            where = self._where(uri)
        except errors.PermanentError as e:
            raise errors.PermanentError(f"model {name}/{version}: {e}") from None
        files = where.files()
        for rel, _ in files:
            if not _safe(rel):
                raise errors.PermanentError(f"model {name}/{version} has an artifact named {rel[:80]!r}")
        if len(files) > MAX_FILES:
            raise errors.PermanentError(f"model {name}/{version} has more than {MAX_FILES} artifact files")
        if not files:
            raise errors.PermanentError(f"model {name}/{version} has no artifacts")
        total = sum(size or 0 for _, size in files)  # unknown sizes are counted while they stream (_Budget)
        if total > self.max_bytes:
            raise errors.PermanentError(f"model {name}/{version}'s artifacts take {total:,} bytes, more than the "
                                        f"{self.max_bytes:,} a release may carry")
        return where, sorted(files)

    def _where(self, uri: str) -> _Artifacts:
        """The reader of the artifacts an artifact URI names: the tracking server's own (mlflow-artifacts:), or
        Azure ML's (azureml:)."""
        scheme = urlsplit(uri).scheme
        if scheme == "mlflow-artifacts":
            return _Served(self, urlsplit(uri).path.strip("/"))
        if scheme == "azureml":
            from shared.adapters import azureml_artifacts

            def get_json(url: str, params: dict[str, str]) -> dict[str, Any]:  # no params keeps a nextLink's query
                return self._json("GET", url, params=params or None)

            return azureml_artifacts.AzureMLArtifacts(uri, tracking_uri=self.uri, get_json=get_json,
                                                      retry=self._retry)
        raise errors.PermanentError(f"the artifacts are at a {scheme or 'plain'}: URI; this adapter reads "
                                    "mlflow-artifacts: (a server run with --serve-artifacts) and azureml:")

    def _read(self, where: _Artifacts, rel: str, max_bytes: int, what: str) -> bytes:
        """One artifact, whole, refused past `max_bytes` (counted as it streams)."""
        def once() -> bytes:
            data = bytearray()
            for chunk in where.stream(rel):
                data += chunk
                if len(data) > max_bytes:
                    raise errors.PermanentError(f"{what} takes more than {max_bytes:,} bytes")
            return bytes(data)

        return self._retry(once)

    def _fetch(self, where: _Artifacts, rel: str, target: Path | None, budget: _Budget) -> str:
        """One artifact's sha256, streamed (written to `target` on the way, when given) within `budget`;
        retried whole on a transient error."""
        def once() -> str:
            digest, start = hashlib.sha256(), budget.used
            try:
                with target.open("wb") if target is not None else contextlib.nullcontext() as out:
                    for chunk in where.stream(rel):
                        budget.take(len(chunk))
                        digest.update(chunk)
                        if out is not None:
                            out.write(chunk)
            except errors.TransientError:
                budget.used = start  # the retry streams the file again
                raise
            return digest.hexdigest()

        return self._retry(once)

    # -- the REST API -----------------------------------------------------------------------------------------
    def _get(self, path: str, **params: str) -> dict[str, Any]:
        return self._call("GET", path, params=params)

    def _pages(self, path: str, key: str, **params: str) -> Iterator[dict[str, Any]]:
        token = ""
        while True:
            page = self._get(path, max_results=str(PAGE), **params, **({"page_token": token} if token else {}))
            yield from page.get(key) or ()
            token = page.get("next_page_token") or ""
            if not token:
                return

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._retry(lambda: self._json(method, f"{self.uri}/api/2.0/mlflow/{path}", **kwargs))

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        with self._send(method, url, **kwargs) as response:
            response.read()
            try:
                doc = response.json()
            except ValueError:
                raise errors.TransientError(f"MLflow {_path(url)} answered {response.status_code} with something "
                                            "that is not JSON") from None
        if not isinstance(doc, dict):
            raise errors.PermanentError(f"MLflow {_path(url)} answered a JSON {type(doc).__name__}, not an object")
        return doc

    @contextlib.contextmanager
    def _send(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """The response to one request, streaming, once its status is a success; closed on leaving."""
        try:
            headers = {"Authorization": f"Bearer {self._token()}"} if self._token else {}
        except Exception as e:  # noqa: BLE001 - an identity endpoint's failure, whatever the credential's type
            raise errors.TransientError(f"no token for the model registry: {type(e).__name__}") from None
        try:
            request = self._client.build_request(method, url, headers=headers, **kwargs)
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as e:
            raise errors.TransientError(f"MLflow {_path(url)} did not answer: {type(e).__name__}") from None
        try:
            if response.status_code >= 400:
                response.read()
                raise _error(response, url)
            yield response
        except httpx.HTTPError as e:  # the body broke off
            raise errors.TransientError(f"MLflow {_path(url)} broke off: {type(e).__name__}") from None
        finally:
            response.close()

    def _retry(self, call: Callable[[], Any]) -> Any:
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=0.5, max=8.0) + tenacity.wait_random(0, 0.25),
            retry=tenacity.retry_if_exception_type(errors.TransientError), sleep=self._sleep, reraise=True)(call)


class _Artifacts(Protocol):
    """Where a version's (or a run's) artifacts are: their files, and one file's bytes."""

    def files(self) -> list[tuple[str, int | None]]: ...

    def stream(self, rel: str) -> Iterator[bytes]: ...


class _Served:
    """Artifacts the tracking server serves itself (`mlflow server --serve-artifacts`), under `root`."""

    def __init__(self, models: MlflowModels, root: str) -> None:
        self._models, self._root = models, root

    def files(self) -> list[tuple[str, int | None]]:
        files: list[tuple[str, int | None]] = []
        folders = [""]
        while folders and len(files) <= MAX_FILES:
            folder = folders.pop()
            path = f"{self._root}/{folder}".rstrip("/")
            models = self._models
            listing = models._retry(lambda: models._json("GET", f"{models.uri}/api/2.0/mlflow-artifacts/artifacts",
                                                         params={"path": path}))
            for entry in listing.get("files") or ():
                rel = f"{folder}/{str(entry.get('path', '')).rsplit('/', 1)[-1]}".lstrip("/")
                if entry.get("is_dir") and _safe(rel):
                    folders.append(rel)
                else:
                    files.append((rel, int(entry.get("file_size") or 0)))
        return files

    def stream(self, rel: str) -> Iterator[bytes]:
        url = f"{self._models.uri}/api/2.0/mlflow-artifacts/artifacts/{quote(f'{self._root}/{rel}')}"
        with self._models._send("GET", url) as response:
            yield from response.iter_bytes(CHUNK_BYTES)


class _Budget:
    """The bytes one version's artifacts may take, counted as they stream (Azure ML lists no sizes)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what, self.used = limit, what, 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise errors.PermanentError(f"{self.what} take more than the {self.limit:,} bytes a release may carry")


def _error(response: httpx.Response, url: str) -> errors.ReleaseError:
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):  # Azure's {"error": {"code", "message"}}
        doc = {"error_code": doc["error"].get("code", ""), "message": doc["error"].get("message", "")}
    code = doc.get("error_code", "") if isinstance(doc, dict) else ""
    message = str(doc.get("message", "") if isinstance(doc, dict) else "")[:200]
    what = f"MLflow {_path(url)} answered {response.status_code}{f' {code}' if code else ''}" + \
        (f": {message}" if message else "")
    status = response.status_code
    if status == 404 or code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and
                                                              "alias" in message.lower()):
        return errors.NotFound(what)
    if status in (408, 429) or status >= 500:
        return errors.TransientError(what)
    return errors.PermanentError(what)


def _path(url: str) -> str:
    """A URL as messages show it: the path after the API's prefix, no host, no query."""
    path = urlsplit(url).path
    return path.split("/api/2.0/", 1)[-1] if "/api/2.0/" in path else path


def _safe(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return bool(rel) and not rel.startswith("/") and ".." not in parts and "\\" not in rel and \
        all(p not in ("", ".") for p in parts) and len(rel) < 1024
