"""BlobModels: ports.Models on the models container, the same on Azurite and Azure Storage.

A data scientist uploads `<name>/<version>/<file>`: one model file (a suffix of model_api.modelfiles.BY_SUFFIX)
plus sample-request.json and sample-response.json, which travel with it. A version is complete when it holds
exactly one model file and that file is a committed, non-empty blob (a listing shows committed blobs only; an
ADLS CreateFile or a stalled upload leaves an empty one). Names follow shared/events.py's model path grammar;
blobs with other names are skipped when listing and refused by get_model.

`Model.sha256` is the model file's: computed by streaming the blob once (pinned to its ETag), then cached in
the blob's metadata (`sha256`, and `uploaded`: the content's Last-Modified, which the metadata write itself
moves) with `If-Match` on that ETag, so a concurrent overwrite is never labelled with the old file's hash. An
overwrite replaces the metadata too, so the cache cannot outlive the bytes it describes. `download` streams
every file of the version in chunks and checks the model file against `Model.sha256`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core import exceptions as azure_errors
from azure.core.credentials import TokenCredential
from azure.storage.blob import BlobProperties, ContainerClient

from shared import errors, events, modelfiles
from shared.adapters import blob_storage
from shared.releases import Model

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024  # what a download holds in memory at a time (plus the HTTP stack's buffers)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # a model name or version: events._MODEL_PATH's


class _Moved(Exception):
    """The model file was overwritten while we hashed it."""


class BlobModels:
    def __init__(self, *, container: ContainerClient, attempts: int = 3) -> None:
        """`attempts` bounds how often a model file overwritten while being hashed is hashed again."""
        self._container = container
        self._attempts = attempts

    @classmethod
    def from_connection_string(cls, conn: str, container_name: str, **options: Any) -> BlobModels:
        return cls(container=blob_storage.container_from_connection_string(conn, container_name), **options)

    @classmethod
    def from_account_url(cls, url: str, credential: TokenCredential, container_name: str,
                         **options: Any) -> BlobModels:
        return cls(container=blob_storage.container_from_account_url(url, credential, container_name), **options)

    def list_models(self, names: tuple[str, ...] = ()) -> list[Model]:
        """Every complete version; with `names`, only theirs (one listing per name: an application reads its own
        models, not every model of the container)."""
        found, versions = [], {}
        for prefix in sorted({f"{name}/" for name in names}) or [""]:
            versions.update(self._versions(prefix=prefix))
        for (name, version), blobs in versions.items():
            model_blob = _model_blob(blobs)
            if model_blob is None:
                continue
            try:
                found.append(self._describe(name, version, model_blob))
            except errors.NotFound:
                continue  # deleted or emptied since the listing
        return found

    def get_model(self, name: str, version: str) -> Model:
        if not (_NAME.fullmatch(name) and _NAME.fullmatch(version)) or ".." in f"{name}/{version}":
            raise errors.InvalidEvent(f"{events.shown(name)}/{events.shown(version)} is not a model <name>/<version>")
        blobs = self._versions(prefix=f"{name}/{version}/").get((name, version), [])
        model_blob = _model_blob(blobs)
        if model_blob is None:
            raise errors.NotFound(f"no complete model {name}/{version}")
        return self._describe(name, version, model_blob)

    def download(self, model: Model, destination: Path) -> None:
        destination.mkdir(parents=True, exist_ok=True)
        blobs = self._versions(prefix=f"{model.name}/{model.version}/").get((model.name, model.version), [])
        if not any(b.name == model.blob_name for b in blobs):
            raise errors.NotFound(f"no model file {model.blob_name}")
        for blob in blobs:
            target = destination / blob.name.rsplit("/", 1)[1]
            digest = self._stream(blob, target)
            if blob.name == model.blob_name and digest != model.sha256:
                # The release is keyed by the sha256 it was planned with: building other bytes would mislabel it.
                raise errors.PermanentError(f"{model.blob_name} changed since it was listed (sha256 differs)")

    def read_file(self, model: Model, path: str, *, max_bytes: int) -> bytes:
        blob_name = f"{model.name}/{model.version}/{path}"
        if not events._MODEL_PATH.fullmatch(blob_name) or ".." in blob_name:
            raise errors.NotFound(f"{events.shown(path)} is not a file name of a model version's folder")
        properties = self._properties(blob_name)
        if properties.size > max_bytes:
            raise errors.PermanentError(f"{blob_name} takes {properties.size:,} bytes, more than {max_bytes:,}")
        with blob_storage.boundary(f"reading {blob_name}"):
            try:
                return b"".join(self._chunks(properties))
            except (azure_errors.ResourceModifiedError, azure_errors.ResourceNotFoundError):
                raise errors.TransientError(f"{blob_name} changed while it was read") from None

    # -- the container ----------------------------------------------------------------------------------------
    def _versions(self, *, prefix: str) -> dict[tuple[str, str], list[BlobProperties]]:
        """Blobs with model path names, grouped by (name, version); other names are skipped."""
        versions: dict[tuple[str, str], list[BlobProperties]] = defaultdict(list)
        with blob_storage.boundary("listing models"):
            try:
                for blob in self._container.list_blobs(name_starts_with=prefix or None, include=["metadata"]):
                    match = events._MODEL_PATH.fullmatch(blob.name)  # the grammar the BlobCreated events obey
                    if match is None or ".." in blob.name:
                        log.debug("models: skipping %s: not <name>/<version>/<file>", events.shown(blob.name))
                        continue
                    versions[(match[1], match[2])].append(blob)
            except azure_errors.ResourceNotFoundError:
                return {}  # no models container yet: no models
        return versions

    def _describe(self, name: str, version: str, blob: BlobProperties) -> Model:
        for attempt in range(self._attempts):
            if attempt:  # overwritten while we hashed it: start again from what is there now
                blob = self._properties(blob.name)
            if not blob.size:
                raise errors.NotFound(f"{blob.name} is empty")
            cached = blob.metadata or {}
            if _SHA256.fullmatch(cached.get("sha256", "")):
                return Model(name=name, version=version, sha256=cached["sha256"], blob_name=blob.name,
                             uploaded=_uploaded(cached.get("uploaded"), blob.last_modified))
            try:
                return self._hash_and_cache(name, version, blob)
            except _Moved:
                continue
        raise errors.TransientError(f"{blob.name} kept changing while it was hashed")

    def _hash_and_cache(self, name: str, version: str, blob: BlobProperties) -> Model:
        with blob_storage.boundary(f"hashing {blob.name}"):
            try:
                # Reads and label are pinned to the listed ETag: the hash and the label are of the same bytes.
                digest = hashlib.sha256()
                for chunk in self._chunks(blob):
                    digest.update(chunk)
                metadata = {**(blob.metadata or {}), "sha256": digest.hexdigest(),
                            "uploaded": blob.last_modified.isoformat()}
                self._container.get_blob_client(blob.name).set_blob_metadata(
                    metadata, etag=blob.etag, match_condition=MatchConditions.IfNotModified)
            except (azure_errors.ResourceModifiedError, azure_errors.ResourceNotFoundError):
                raise _Moved() from None
        log.info("models: cached the sha256 of %s", blob.name)
        return Model(name=name, version=version, sha256=digest.hexdigest(), blob_name=blob.name,
                     uploaded=blob.last_modified)

    def _properties(self, blob_name: str) -> BlobProperties:
        with blob_storage.boundary(f"reading {blob_name}"):
            try:
                return self._container.get_blob_client(blob_name).get_blob_properties()
            except azure_errors.ResourceNotFoundError:
                raise errors.NotFound(f"{blob_name} is gone") from None

    def _stream(self, blob: BlobProperties, target: Path) -> str:
        """Writes the blob to `target` chunk by chunk; returns its sha256."""
        digest = hashlib.sha256()
        with blob_storage.boundary(f"downloading {blob.name}"):
            try:
                with target.open("wb") as out:
                    for chunk in self._chunks(blob):
                        digest.update(chunk)
                        out.write(chunk)
            except azure_errors.ResourceModifiedError:
                raise errors.TransientError(f"{blob.name} changed while it was downloaded") from None
            except azure_errors.ResourceNotFoundError:
                raise errors.NotFound(f"{blob.name} is gone") from None
        return digest.hexdigest()

    def _chunks(self, blob: BlobProperties) -> Iterator[bytes]:
        """The blob's bytes as listed, in ranges of CHUNK_BYTES, each pinned to the listed ETag (412 if it
        changed). Explicit ranges keep memory flat whatever the ContainerClient's own download settings."""
        client = self._container.get_blob_client(blob.name)
        for offset in range(0, blob.size, CHUNK_BYTES):
            yield client.download_blob(offset=offset, length=min(CHUNK_BYTES, blob.size - offset),
                                       etag=blob.etag, match_condition=MatchConditions.IfNotModified).readall()

def _model_blob(blobs: list[BlobProperties]) -> BlobProperties | None:
    """The version's one model file when the version is complete, else None."""
    models = [b for b in blobs if _is_model_file(b.name)]
    if len(models) != 1 or not models[0].size:
        return None
    return models[0]


def _is_model_file(blob_name: str) -> bool:
    filename = blob_name.rsplit("/", 1)[1].lower()
    return filename not in events.SIDECAR_FILES and Path(filename).suffix in modelfiles.BY_SUFFIX


def _uploaded(cached: str | None, last_modified: datetime) -> datetime:
    try:
        return datetime.fromisoformat(cached) if cached else last_modified
    except ValueError:
        return last_modified
