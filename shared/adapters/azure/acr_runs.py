"""What AcrTasksBuilder and AcrTaskSmokeRunner share: the ACR Tasks management client, a run's status and times,
its log (read through the run's log SAS link), and SDK errors translated at the boundary.

The SDK is azure-mgmt-containerregistrytasks, pinned to ARM api-version 2025-03-01-preview (docs/azure-adapters.md
says why this package and not azure-mgmt-containerregistry<15). Every call names the registry resource by
(resource group, registry name); the subscription is the client's.

SAS links are secrets: they are read here and never leave this module whole. `without_query` keeps a link's
scheme, host and path, which is what the ledger may hold; messages name an HTTP status or an ARM error code,
never a URL with its query.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from pathlib import Path
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

from shared import errors

API_VERSION = "2025-03-01-preview"
"""ACR Tasks' ARM api-version; pinned so that an SDK upgrade cannot change the wire under us."""
PLATFORM = {"os": "Linux", "architecture": "amd64"}
QUEUED, STARTED, RUNNING, SUCCEEDED = "Queued", "Started", "Running", "Succeeded"
FAILED, CANCELED, ERROR, TIMEOUT = "Failed", "Canceled", "Error", "Timeout"
IN_FLIGHT = frozenset({QUEUED, STARTED, RUNNING})
LOG_TAIL_BYTES = 64 * 1024


def tasks_client(credential: TokenCredential, subscription_id: str, *, endpoint: str | None = None,
                 **options: Any):
    """A ContainerRegistryTasksMgmtClient. `endpoint` is the ARM endpoint (default: the public cloud's);
    `options` go to azure-core (retry_total=..., connection_verify=<CA bundle> for a test server, ...)."""
    from azure.mgmt.containerregistrytasks import ContainerRegistryTasksMgmtClient

    return ContainerRegistryTasksMgmtClient(credential, subscription_id, base_url=endpoint, api_version=API_VERSION,
                                            **options)


def status_of(run: Any) -> str:
    """The run's status as ARM spells it ("Queued", "Running", "Succeeded", ...); "" when it has none."""
    status = getattr(run, "status", None)
    return str(getattr(status, "value", status) or "")


def seconds_between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def without_query(url: str) -> str:
    """`url` with its query (a SAS) and fragment removed: what an operator may see and the ledger may keep."""
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def log_link(client: Any, resource_group: str, registry: str, run_id: str) -> str:
    """The run's log SAS link ("" when ARM has none). A secret: read the log with it, keep `without_query(...)`."""
    try:
        result = client.runs.get_log_sas_url(resource_group, registry, run_id)
    except AzureError as e:
        raise translate(e, f"getting the log link of run {run_id}") from None
    return getattr(result, "log_link", None) or ""


def read_log_tail(sas_url: str, *, max_bytes: int = LOG_TAIL_BYTES, **options: Any) -> str:
    """The last `max_bytes` of the log blob behind `sas_url` ("" when there is no log yet). Only the tail is
    downloaded: a build log can be long. `options` go to the blob client."""
    from azure.storage.blob import BlobClient

    if not sas_url:
        return ""
    try:
        blob = BlobClient.from_blob_url(sas_url, **options)
        size = blob.get_blob_properties().size
        offset = max(0, size - max_bytes)
        data = blob.download_blob(offset=offset, length=size - offset).readall() if size else b""
    except ResourceNotFoundError:
        return ""
    except AzureError as e:  # the storage message may quote the URL: keep only the status
        status = getattr(e, "status_code", None) or "no answer"
        raise errors.TransientError(f"could not read the run's log (storage answered {status})") from None
    text = data.decode("utf-8", errors="replace")
    return text if offset == 0 else text.partition("\n")[2]  # drop the first, cut line


UPLOAD_BLOCK_BYTES = 4 * 1024 * 1024  # what one upload request holds in memory, whatever the file's size


def upload_source(client: Any, resource_group: str, registry_name: str, source: Path, *, what: str,
                  **options: Any) -> str:
    """Streams `source` (a tar.gz) to the registry's build-source upload URL; returns its relative path, what a
    run's `sourceLocation` names. `options` go to the blob client."""
    from azure.storage.blob import BlobClient

    try:
        upload = client.registries.get_build_source_upload_url(resource_group, registry_name)
    except AzureError as e:
        raise translate(e, "getting a build-source upload URL") from None
    if not upload.upload_url or not upload.relative_path:
        raise errors.TransientError("ACR Tasks gave no build-source upload URL")
    try:
        blob = BlobClient.from_blob_url(upload.upload_url, max_single_put_size=UPLOAD_BLOCK_BYTES,
                                        max_block_size=UPLOAD_BLOCK_BYTES, **options)
        with source.open("rb") as data:
            blob.upload_blob(data, length=source.stat().st_size, overwrite=True, max_concurrency=1)
    except AzureError as e:  # the storage message may quote the SAS URL: keep only the status
        status = getattr(e, "status_code", None) or "no answer"
        raise errors.TransientError(f"uploading {what} failed (storage answered {status})") from None
    return upload.relative_path


def last_lines(text: str, count: int = 5, *, limit: int = 400) -> str:
    """The last `count` non-empty lines of `text`, joined with " | ", at most `limit` characters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()][-count:]
    joined = " | ".join(lines)
    return joined if len(joined) <= limit else "..." + joined[-(limit - 3):]


def translate(e: AzureError, doing: str) -> errors.ReleaseError:
    """An SDK error as one of shared.errors: 404 NotFound; no answer, 408, 429 and 5xx TransientError (try
    again); any other 4xx PermanentError (the request or the identity's rights need fixing). The message names
    the status and ARM's error code and message, which never carry our SAS links (we send relative paths)."""
    status = getattr(e, "status_code", None)
    detail = _arm_detail(e)
    if isinstance(e, ResourceNotFoundError) or status == 404:
        return errors.NotFound(f"ACR Tasks: not found while {doing}{detail}")
    if not isinstance(e, HttpResponseError) or status is None or status >= 500 or status in (408, 429):
        return errors.TransientError(f"ACR Tasks did not answer while {doing} "
                                     f"({status or type(e).__name__}){detail}")
    return errors.PermanentError(f"ACR Tasks refused {doing} ({status}){detail}")


def _arm_detail(e: AzureError) -> str:
    error = getattr(e, "error", None)
    code, message = getattr(error, "code", None), getattr(error, "message", None)
    if not code:
        return ""
    message = " ".join(str(message or "").split())
    return f": {code} {message[:200]}".rstrip()
