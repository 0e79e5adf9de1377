"""Azure ML's artifact URIs (`azureml://`), read the way azureml-mlflow reads them, for MlflowModels.

An Azure ML workspace's MLflow registry answers `get-download-uri` (and a run's `artifact_uri`) with one of:

    azureml://<host>/mlflow/v2.0/subscriptions/<s>/resourceGroups/<rg>/providers/
        Microsoft.MachineLearningServices/workspaces/<ws>/experiments/<e>/runs/<r>/artifacts/<path>
                  the files a run logged (`mlflow.log_model`, then registered from runs:/<r>/<path>): the
                  run-history service lists them,
                  GET https://<host>/history/v1.0/<workspace>/experiments/<e>/runs/<r>/artifacts
                  and answers each one's content location,
                  GET .../artifacts/contentinfo?path=<path>  ->  {"contentUri": <a read SAS URL>}
    azureml://artifacts/LocalUpload/<container>/<path>
                  a folder registered from local files (azureml-mlflow uploads it first): the same two calls
                  on the artifact service, GET https://<host>/artifact/v2.0/<workspace>/artifacts/<origin>/
                  <container>[/contentinfo?path=]
Listings are pages (`value[].path`, `nextLink`, absolute or relative) of every file in the container, with no
sizes; the files under the URI's path are the model. The content is read from the SAS URL with azure-storage-blob, as azureml-mlflow
does. The workspace is the tracking URI's (a URI that names another is refused); the calls carry the same
Entra token as the registry's, and a `nextLink` to another host is refused rather than sent it.

Other forms (an Azure ML registry's `azureml://.../registries/...`, a datastore path) are refused with their
form named. Only the shapes in azureml-mlflow's source were checked, against tests/fakes/azureml_workspace.py;
nothing here has met a real workspace.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from azure.core import exceptions as azure_errors
from azure.storage.blob import BlobClient

from shared import errors

MAX_PAGES = 1000
_WORKSPACE = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                        r"Microsoft\.MachineLearningServices/workspaces/[^/]+", re.IGNORECASE)
_RUN = re.compile(r"(?:/mlflow/v2\.0)?(?P<workspace>" + _WORKSPACE.pattern + r")?/experiments/(?P<experiment>[^/]+)"
                  r"/runs/(?P<run>[^/]+)(?:/artifacts(?:/(?P<path>.*))?)?", re.IGNORECASE)
_ORIGIN = re.compile(r"/(?P<origin>[^/]+)/(?P<container>[^/]+)(?:/(?P<path>.*))?")

_KEYWORDS = {"mlflow", "v2.0", "subscriptions", "resourcegroups", "providers", "workspaces", "experiments", "runs",
             "artifacts", "registries", "models", "versions", "storage", "paths", "datastores", "localupload"}
GetJson = Callable[[str, dict[str, str]], dict[str, Any]]
Retry = Callable[[Callable[[], Any]], Any]


def workspace_path(tracking_uri: str) -> str:
    """The workspace's ARM path in an Azure ML tracking URI ("" when it names none)."""
    match = _WORKSPACE.search(urlsplit(tracking_uri).path)
    return match.group(0) if match else ""


class AzureMLArtifacts:
    """The files under one azureml:// URI: `files()` lists them (relative to the URI, no sizes), `stream(rel)`
    reads one. `get_json(url, params)` is the registry client's authenticated GET, `retry` its retrying; a
    stream is retried whole by its reader (a new SAS URL each time)."""

    def __init__(self, uri: str, *, tracking_uri: str, get_json: GetJson, retry: Retry) -> None:
        tracking = urlsplit(tracking_uri)
        workspace = workspace_path(tracking_uri)
        if not workspace:
            raise errors.PermanentError("the artifacts are at an azureml: URI, and the registry's URI names no "
                                        "Azure ML workspace to read them through")
        parts = urlsplit(uri)
        host = f"{tracking.scheme}://{tracking.netloc}"
        if parts.netloc == "artifacts" and (found := _ORIGIN.fullmatch(parts.path)) and _names(found, "origin",
                                                                                              "container"):
            base = f"{host}/artifact/v2.0{workspace}/artifacts/{_segment(found['origin'])}/" \
                   f"{_segment(found['container'])}"
        elif (found := _RUN.fullmatch(parts.path)) and _names(found, "experiment", "run"):
            if found["workspace"] and found["workspace"].lower() != workspace.lower():
                raise errors.PermanentError("the artifacts are in another Azure ML workspace than the registry's")
            base = f"{host}/history/v1.0{workspace}/experiments/{_segment(found['experiment'])}/runs/" \
                   f"{_segment(found['run'])}/artifacts"
        else:
            raise errors.PermanentError(f"the artifacts are at an azureml: URI of a form this adapter does not read "
                                        f"({_form(parts.path)}); it reads run artifacts and LocalUpload folders")
        self._host, self._list, self._info = host, base, f"{base}/contentinfo"
        self._prefix = (found["path"] or "").strip("/")
        self._get_json, self._retry = get_json, retry

    def files(self) -> list[tuple[str, int | None]]:
        found: list[tuple[str, int | None]] = []
        url, params, seen = self._list, {}, set()
        while url:
            if url in seen or len(seen) >= MAX_PAGES:
                raise errors.PermanentError(f"Azure ML's artifact listing did not end after {len(seen)} pages")
            seen.add(url)
            page = self._retry(lambda: self._get_json(url, params))
            for entry in page.get("value") or ():
                path = str(entry.get("path") or "") if isinstance(entry, dict) else ""
                rel = path[len(self._prefix) + 1:] if self._prefix and path.startswith(f"{self._prefix}/") else \
                    path if not self._prefix else ""
                if rel:
                    found.append((rel, None))
            following = str(page.get("nextLink") or "")
            url, params = (urljoin(url, following) if following else ""), {}
            if url and _origin(url) != _origin(self._host):  # the token goes to the workspace's host only
                raise errors.PermanentError("Azure ML's artifact listing sent its next page to another host")
        return found

    def stream(self, rel: str) -> Iterator[bytes]:
        """The artifact's bytes from the SAS URL Azure ML answers for it. A 403 before any byte (the SAS ran out
        on the way: Azure says AuthenticationFailed, Azurite AuthorizationFailure) asks for a fresh URL once; a
        second 403 is refused for good (a firewall, a private endpoint)."""
        path = f"{self._prefix}/{rel}" if self._prefix else rel
        for attempt in (1, 2):
            uri = self._get_json(self._info, {"path": path}).get("contentUri")
            if not isinstance(uri, str) or urlsplit(uri).scheme not in ("https", "http"):
                raise errors.PermanentError(f"Azure ML answered no content URI for the artifact {rel}")
            started = False
            try:
                for chunk in BlobClient.from_blob_url(uri, retry_total=0).download_blob().chunks():  # we retry
                    started = True
                    yield chunk
                return
            except azure_errors.ResourceNotFoundError:
                raise errors.NotFound(f"the artifact {rel} has no content in storage") from None
            except azure_errors.HttpResponseError as e:
                status, code = e.status_code or 0, str(e.error_code or "")
                if status == 403 and attempt == 1 and not started:
                    continue
                transient = started or status in (408, 429) or status >= 500  # started: the reader starts over
                raise (errors.TransientError if transient else errors.PermanentError)(
                    f"storage answered {status}{f' {code}' if code else ''} for the artifact {rel}") from None
            except azure_errors.AzureError as e:
                raise errors.TransientError(f"storage did not answer for the artifact {rel}: "
                                            f"{type(e).__name__}") from None


def _names(found: re.Match, *groups: str) -> bool:
    """The URI's ids are names, not `.` or `..` (which would move the authenticated call to another path)."""
    return all(found[g] not in (".", "..") for g in groups)


def _segment(name: str) -> str:
    return quote(unquote(name), safe="")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _form(path: str) -> str:
    """A URI path as messages show it: its shape, not its ids."""
    words = [p for p in path.split("/") if p][:10]
    return "/".join(w if w.lower() in _KEYWORDS else "…" for w in words) or "no path"
