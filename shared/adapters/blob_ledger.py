"""BlobLedger: ports.Ledger on one blob container, the same on Azurite and Azure Storage.

Layout (docs/ledger.md is the contract), at the container's root for the application a single-application
ShipBot ships, under `apps/<name>/` for each other application of the fleet:
    releases/<release id>.json     Release.to_json()
    environments/<name>.json       Environment.to_json(); absent reads as Environment(name)
    leases/<environment>           empty; its blob lease is the one-writer lock on that environment's rollouts
    events/<event id>              empty markers of events seen (ids outside [A-Za-z0-9._:-] are hashed)
    fleet/v<000001>.json           each applied fleet file, fleet.Version.to_json(); the highest is in force
    index/by-time/<inverted time>-<id>   empty, one per release: listed newest first (releases_since)
    index/in-flight/<id>           empty, while the release is building, built or testing (list_in_flight)
    index/digest/<hex>             the id of the release whose image has that digest (find_release_by_digest)
    index/v1                       empty: every release has its markers (a ledger from before gets them once)
    archive/environments/<name>/<first µs>-<n>.json   history entries an environment document let go

Creates send `If-None-Match: *` (a taken name -> errors.Exists). Updates are compare-and-swap: read with the
ETag, apply `change`, write with `If-Match`; a 412 re-reads and retries with jittered backoff, bounded, then
errors.LedgerConflict. A `change` that returns its input unchanged writes nothing. Every SDK error becomes an
errors.TransientError with a message free of keys and SAS tokens (shared/adapters/blob_storage.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import tenacity
from azure.core import MatchConditions
from azure.core import exceptions as azure_errors
from azure.core.credentials import TokenCredential
from azure.storage.blob import BlobClient, BlobLeaseClient, ContainerClient, ContentSettings

from shared import errors, fleet
from shared.adapters import blob_storage
from shared.releases import Entry, Environment, Release, entries_from_json, entries_to_json, split_history

log = logging.getLogger(__name__)

Doc = TypeVar("Doc", Release, Environment)

# Release ids (`r-…`, `i-…`) and environment names: what may stand in a blob name as one path segment.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Event ids are GUIDs from Event Grid and the webhooks; anything else is hashed into a name of its own.
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_JSON = ContentSettings(content_type="application/json")
_APP = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")  # shared/fleet.py's application names
_BY_TIME, _IN_FLIGHT, _DIGEST = "index/by-time/", "index/in-flight/", "index/digest/"
_INDEX_READY = "index/v1"  # present once every release has its markers
_PAGE = 100
_MAX_MICROS = 10**17 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLEET = re.compile(r"fleet/v\d{6,}\.json")
_LIST_WORKERS = 8  # below requests' connection pool of 10 per host


class _Conflict(Exception):
    """The document changed between our read and our write (412), or was created meanwhile (409)."""


class _Busy(Exception):
    """Another holder has the lease."""


class BlobLedger:
    def __init__(self, *, container: ContainerClient, sleep: Callable[[float], None] = time.sleep,
                 attempts: int = 10, lease_seconds: int = 60, lease_wait_seconds: float = 30.0,
                 lease_poll_seconds: float = 2.0, app: str = "") -> None:
        """`attempts` bounds the compare-and-swap retries of one update. A lease lasts `lease_seconds`
        (15-60, Azure's limits) and is renewed every third of that while held; a busy lease is polled every
        `lease_poll_seconds` for up to `lease_wait_seconds`, so a rollout queues briefly behind another and
        otherwise fails as LeaseBusy for the host to retry. `sleep` is every wait's, so tests are instant.
        `app` names the application whose ledger this is: its documents live under `apps/<app>/`; the empty
        name is the layout a single-application ShipBot has always written (its ledger needs no migration)."""
        if app and not _APP.fullmatch(app):
            raise ValueError(f"application name {app!r} is not [a-z0-9-]{{1,40}}")
        if not 15 <= lease_seconds <= 60:
            raise ValueError("lease_seconds must be between 15 and 60 (Azure's limits for a finite lease)")
        self._container = container
        self._prefix = f"apps/{app}/" if app else ""
        self._sleep = sleep
        self._attempts = attempts
        self._lease_seconds = lease_seconds
        self._lease_polls = 1 + math.ceil(max(0.0, lease_wait_seconds) / lease_poll_seconds)
        self._lease_poll_seconds = lease_poll_seconds
        self._ready = False
        self._ready_lock = threading.Lock()
        self._listed: dict[str, tuple[str, Release]] = {}  # blob name -> (etag, release): list_releases' cache
        self._listed_lock = threading.Lock()
        self._indexed = False

    @classmethod
    def from_connection_string(cls, conn: str, container_name: str, **options: Any) -> BlobLedger:
        """`options` are the constructor's keywords (sleep=, lease_seconds=, ...)."""
        return cls(container=blob_storage.container_from_connection_string(conn, container_name), **options)

    @classmethod
    def from_account_url(cls, url: str, credential: TokenCredential, container_name: str,
                         **options: Any) -> BlobLedger:
        return cls(container=blob_storage.container_from_account_url(url, credential, container_name), **options)

    # -- releases ---------------------------------------------------------------------------------------------
    def create_release(self, release: Release) -> None:
        name = _release_blob(release.id, creating=True)
        self._index_ready()
        with blob_storage.boundary(f"creating {name}"):
            exists = self._blob(name).exists()  # the usual duplicate (reconcile re-plans the head) writes nothing
        if not exists:
            self._index(release)  # before the document: a marker without one is skipped, never the reverse
            with blob_storage.boundary(f"creating {name}"):
                try:
                    self._blob(name).upload_blob(_dump(release), overwrite=False, content_settings=_JSON)
                except azure_errors.ResourceExistsError:
                    exists = True
            if exists:  # created meanwhile by another writer: its markers stand, ours go
                existing = self.get_release(release.id)
                if _time_key(existing) != _time_key(release):
                    self._unmark(_time_key(release))
                if release.status.in_flight and not existing.status.in_flight:
                    self._unmark_in_flight(release.id)
        if exists:
            raise errors.Exists(f"release {release.id} exists")

    def get_release(self, release_id: str) -> Release:
        return self._read(_release_blob(release_id), Release.from_json, missing=None)[0]

    def list_releases(self) -> list[Release]:
        """Newest first. Documents whose ETag did not change since the last listing come from memory; the
        others are fetched in parallel, so a few hundred releases list in about one round trip per page."""
        with blob_storage.boundary("listing releases"):
            # A listing gives ETags bare, a GET's header quoted: compare them bare.
            blobs = self._list("releases/")
            listed = {b.name: b.etag.strip('"') for b in blobs}
        with self._listed_lock:
            cached = {n: self._listed[n] for n in listed if n in self._listed and self._listed[n][0] == listed[n]}
        stale = [n for n in listed if n not in cached]
        with ThreadPoolExecutor(max_workers=_LIST_WORKERS) as pool:
            fetched = list(pool.map(self._fetch_listed, stale))
        fresh = dict(cached)
        fresh.update((n, got) for n, got in zip(stale, fetched) if got is not None)
        with self._listed_lock:
            self._listed = fresh
        return sorted((r for _, r in fresh.values()), key=lambda r: (r.created, r.id), reverse=True)

    def _fetch_listed(self, name: str) -> tuple[str, Release] | None:
        try:
            release, etag = self._read(name, Release.from_json, missing=None)
        except errors.NotFound:
            return None  # deleted since the listing
        except errors.PermanentError as e:
            log.error("ledger: skipping %s: %s", name, e)
            return None
        return (etag or "").strip('"'), release

    def update_release(self, release_id: str, change: Callable[[Release], Release]) -> Release:
        seen: list[Release] = []

        def tracked(release: Release) -> Release:
            seen[:] = [release]
            after = change(release)
            if after.status.in_flight and not release.status.in_flight:
                self._mark(_IN_FLIGHT + release.id)  # before the document enters flight: never one without it
            return after

        after = self._update(_release_blob(release_id), Release.from_json, tracked, missing=None)
        if seen and seen[0] != after:
            self._index_changed(seen[0], after)
        return after

    # -- the index: what a trigger reads instead of every release ---------------------------------------------
    def list_in_flight(self) -> list[Release]:
        """The releases building, built or testing, newest first: one listing of index/in-flight/ and their
        documents. A marker whose release has settled (its writer died before removing it) is removed."""
        self._index_ready()
        with blob_storage.boundary("listing releases in flight"):
            ids = [b.name[len(_IN_FLIGHT):] for b in self._list(_IN_FLIGHT)]
        found = []
        for release in self._fetch_ids(ids):
            if release.status.in_flight:
                found.append(release)
            else:
                self._unmark_in_flight(release.id)
        return sorted(found, key=lambda r: (r.created, r.id), reverse=True)

    def releases_since(self, moment: datetime | None = None, *, limit: int | None = None) -> list[Release]:
        """Releases created at or after `moment` (all when None), newest first, at most `limit`: the time
        index is listed newest first and read only as far as it is needed."""
        self._index_ready()
        out: list[Release] = []
        with blob_storage.boundary("listing releases by time"):
            pages = self._container_ready().list_blobs(name_starts_with=self._prefix + _BY_TIME,
                                                       results_per_page=_PAGE).by_page()
            for page in pages:
                names = [b.name[len(self._prefix):] for b in page]
                keys = [(name, _time_of(name)) for name in names]
                wanted = [name for name, at in keys if moment is None or at >= moment]
                out += self._fetch_ids([name[len(_BY_TIME) + 18:] for name in wanted])
                if len(wanted) < len(keys) or (limit is not None and len({r.id for r in out}) >= limit):
                    break
        unique = {r.id: r for r in out}.values()  # a marker left by a crashed duplicate create: one release
        ordered = sorted(unique, key=lambda r: (r.created, r.id), reverse=True)
        return ordered[:limit] if limit is not None else ordered

    def find_release_by_digest(self, digest: str) -> Release:
        self._index_ready()
        name = _DIGEST + digest.removeprefix("sha256:")
        with blob_storage.boundary("finding a release by its image"):
            try:
                release_id = self._blob(name).download_blob().readall().decode()
            except azure_errors.ResourceNotFoundError:
                raise errors.NotFound(f"no release has the image {digest}") from None
        release = self.get_release(release_id)
        if release.digest != digest:
            raise errors.NotFound(f"no release has the image {digest}")
        return release

    def _index(self, release: Release) -> None:
        """Writes every marker of `release` (idempotent)."""
        self._mark(_time_key(release))
        if release.status.in_flight:
            self._mark(_IN_FLIGHT + release.id)
        if release.digest:
            self._mark(_DIGEST + release.digest.removeprefix("sha256:"), release.id.encode())

    def _index_changed(self, before: Release, after: Release) -> None:
        if after.status.in_flight:  # again on every update in flight: a marker another writer removed comes back
            self._mark(_IN_FLIGHT + after.id)
        if after.digest and (after.digest != before.digest or after.status.in_flight):  # rewritten while in
            self._mark(_DIGEST + after.digest.removeprefix("sha256:"), after.id.encode())  # flight: a lost one heals
        if before.status.in_flight and not after.status.in_flight:
            self._unmark_in_flight(after.id)

    def _unmark_in_flight(self, release_id: str) -> None:
        """Removes a release's in-flight marker, then reads the release again: one that went back into flight
        meanwhile (a retried build) gets its marker back, so a race never hides it."""
        self._unmark(_IN_FLIGHT + release_id)
        try:
            if self.get_release(release_id).status.in_flight:
                self._mark(_IN_FLIGHT + release_id)
        except errors.NotFound:
            pass

    def _index_ready(self) -> None:
        """Once per instance: a ledger written before the index had it gets it, from one full listing."""
        if self._indexed:
            return
        with blob_storage.boundary("checking the release index"):
            ready = self._blob(_INDEX_READY).exists()
        if not ready:
            releases = self.list_releases()
            with ThreadPoolExecutor(max_workers=_LIST_WORKERS) as pool:
                list(pool.map(self._index, releases))
            self._mark(_INDEX_READY)
            log.info("ledger: indexed %d releases written before the index", len(releases))
        self._indexed = True

    def _fetch_ids(self, ids: list[str]) -> list[Release]:
        with ThreadPoolExecutor(max_workers=_LIST_WORKERS) as pool:
            fetched = list(pool.map(self._fetch_listed, [_release_blob(i) for i in ids if _ID.fullmatch(i)]))
        return [release for _, release in (got for got in fetched if got is not None)]

    def _mark(self, name: str, data: bytes = b"") -> None:
        with blob_storage.boundary("writing the release index"):
            self._blob(name).upload_blob(data, overwrite=True)

    def _unmark(self, name: str) -> None:
        with blob_storage.boundary("writing the release index"), \
                contextlib.suppress(azure_errors.ResourceNotFoundError):
            self._blob(name).delete_blob()

    # -- environments -----------------------------------------------------------------------------------------
    def get_environment(self, name: str) -> Environment:
        return self._read(_environment_blob(name), Environment.from_json, missing=Environment(name))[0]

    def update_environment(self, name: str, change: Callable[[Environment], Environment]) -> Environment:
        def bounded(env: Environment) -> Environment:
            after, archived = split_history(change(env))
            if archived:  # before the document lets them go; the same entries make the same archive blob
                with blob_storage.boundary(f"archiving the history of environment {name}"):
                    self._blob(_archive_blob(name, archived)).upload_blob(
                        _dump_json({"environment": name, "history": entries_to_json(archived)}), overwrite=True,
                        content_settings=_JSON)
            return after

        return self._update(_environment_blob(name), Environment.from_json, bounded, missing=Environment(name))

    def environment_history(self, name: str) -> list[Entry]:
        """Every history entry of an environment, oldest first: its archive blobs in time order, then what its
        document holds (an entry in both, from an archive written by an update that then lost its race, once)."""
        _environment_blob(name)  # refuses a name that cannot be an environment
        with blob_storage.boundary(f"reading the history of environment {name}"):
            names = sorted(b.name for b in self._list(f"archive/environments/{name}/"))
            archived = [entry for blob in names for entry in entries_from_json(
                json.loads(self._blob(blob).download_blob().readall())["history"])]
        seen, out = set(), []
        for entry in archived + list(self.get_environment(name).history):
            if entry not in seen:
                seen.add(entry)
                out.append(entry)
        return out

    def lease_environment(self, name: str, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        return self._lease(f"leases/{_segment(name, 'environment')}", name, wait=wait)

    def lease_release(self, release_id: str, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        return self._lease(f"leases/releases/{_segment(release_id, 'release')}", f"release {release_id}",
                           wait=wait)

    @contextlib.contextmanager
    def _lease(self, blob_name: str, name: str, *, wait: bool) -> Iterator[None]:
        blob = self._blob(blob_name)
        try:
            lease = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(self._lease_polls if wait else 1),
                wait=tenacity.wait_fixed(self._lease_poll_seconds),
                retry=tenacity.retry_if_exception_type(_Busy), sleep=self._sleep,
            )(self._acquire, blob, name)
        except tenacity.RetryError:
            raise errors.LeaseBusy(f"another worker holds the lease on {name}") from None
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lease, name, stop), daemon=True,
                                   name=f"lease-{name}")
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            try:
                with blob_storage.boundary(f"releasing the lease on {name}"):
                    lease.release()
            except errors.TransientError as e:
                log.warning("%s; it expires within %d s", e, self._lease_seconds)

    def _acquire(self, blob: BlobClient, name: str) -> BlobLeaseClient:
        lease = BlobLeaseClient(blob)
        with blob_storage.boundary(f"leasing {name}"):
            try:
                lease.acquire(lease_duration=self._lease_seconds)
                return lease
            except azure_errors.ResourceNotFoundError:
                pass
            except azure_errors.ResourceExistsError as e:  # 409 LeaseAlreadyPresent
                if blob_storage.error_code(e) != "LeaseAlreadyPresent":
                    raise
                raise _Busy() from None
            # The lease blob is made on first use; a concurrent maker is fine.
            with contextlib.suppress(azure_errors.ResourceExistsError):
                self._container_ready()
                blob.upload_blob(b"", overwrite=False)
            try:
                lease.acquire(lease_duration=self._lease_seconds)
                return lease
            except azure_errors.ResourceExistsError as e:
                if blob_storage.error_code(e) != "LeaseAlreadyPresent":
                    raise
                raise _Busy() from None

    def _renew(self, lease: BlobLeaseClient, name: str, stop: threading.Event) -> None:
        # Renewing at a third of the duration leaves two more tries before a failed renewal loses the lease.
        while not stop.wait(self._lease_seconds / 3):
            try:
                with blob_storage.boundary(f"renewing the lease on {name}"):
                    lease.renew()
            except errors.TransientError as e:
                log.error("%s: another rollout may start once it expires", e)

    # -- the fleet ----------------------------------------------------------------------------------------------
    def get_fleet(self, version: int | None = None) -> fleet.Version:
        if version is None:
            names = self._fleet_names()
            if not names:
                raise errors.NotFound("no fleet file was applied")
            name = names[-1]
        else:
            name = _fleet_blob(version)
        with blob_storage.boundary(f"reading {name}"):
            try:
                data = self._blob(name).download_blob().readall()
            except azure_errors.ResourceNotFoundError:
                raise errors.NotFound(f"no fleet version {version}") from None
        try:
            return fleet.Version.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as e:
            raise errors.PermanentError(f"{name} is not a fleet version ({type(e).__name__})") from None

    def list_fleet(self) -> list[fleet.Version]:
        return [self.get_fleet(int(name[len("fleet/v"):-len(".json")])) for name in reversed(self._fleet_names())]

    def put_fleet(self, text: str, *, by: str, at: datetime, reason: str = "") -> fleet.Version:
        """Creates the next version's blob with If-None-Match: two applies at once get two versions, in order."""
        def attempt() -> fleet.Version:
            names = self._fleet_names()
            applied = fleet.Version(int(names[-1][len("fleet/v"):-len(".json")]) + 1 if names else 1,
                                    text, by, at, reason)
            with blob_storage.boundary("writing the fleet file"):
                try:
                    self._blob(_fleet_blob(applied.version)).upload_blob(
                        _dump_json(applied.to_json()), overwrite=False, content_settings=_JSON)
                except azure_errors.ResourceExistsError:
                    raise _Conflict() from None
            return applied

        return self._until_no_conflict(attempt, "the fleet")

    def _fleet_names(self) -> list[str]:
        with blob_storage.boundary("listing the fleet versions"):
            return sorted(b.name for b in self._container_ready().list_blobs(name_starts_with="fleet/v")
                          if _FLEET.fullmatch(b.name))

    # -- event markers ----------------------------------------------------------------------------------------
    def create_event_marker(self, event_id: str) -> None:
        name = _event_blob(event_id)
        with blob_storage.boundary("creating an event marker"):
            try:
                self._blob(name).upload_blob(b"", overwrite=False)
            except azure_errors.ResourceExistsError:
                raise errors.Exists(f"event {name.removeprefix('events/')} was seen before") from None

    def delete_event_marker(self, event_id: str) -> None:
        with blob_storage.boundary("deleting an event marker"), \
                contextlib.suppress(azure_errors.ResourceNotFoundError):
            self._blob(_event_blob(event_id)).delete_blob()

    # -- documents --------------------------------------------------------------------------------------------
    def _read(self, name: str, load: Callable[[dict], Doc], *, missing: Doc | None) -> tuple[Doc, str | None]:
        """The document and its ETag; `missing` (with no ETag) when absent, or NotFound if that is None."""
        with blob_storage.boundary(f"reading {name}"):
            try:
                downloader = self._blob(name).download_blob()
                data, etag = downloader.readall(), downloader.properties.etag
            except azure_errors.ResourceNotFoundError:
                if missing is None:
                    raise errors.NotFound(f"no {_what(name)}") from None
                return missing, None
        try:
            return load(json.loads(data)), etag
        except (ValueError, KeyError, TypeError) as e:
            raise errors.PermanentError(f"{name} is not a ledger document ({type(e).__name__})") from None

    def _update(self, name: str, load: Callable[[dict], Doc], change: Callable[[Doc], Doc], *,
                missing: Doc | None) -> Doc:
        def attempt() -> Doc:
            before, etag = self._read(name, load, missing=missing)
            after = change(before)
            if after == before:
                return before
            with blob_storage.boundary(f"writing {name}"):
                try:
                    if etag is None:  # absent when read: create it, unless someone else just did
                        self._blob(name).upload_blob(_dump(after), overwrite=False, content_settings=_JSON)
                    else:
                        self._blob(name).upload_blob(_dump(after), overwrite=True, content_settings=_JSON,
                                                     etag=etag, match_condition=MatchConditions.IfNotModified)
                except (azure_errors.ResourceModifiedError, azure_errors.ResourceExistsError):
                    raise _Conflict() from None
            return after

        return self._until_no_conflict(attempt, _what(name))

    def _until_no_conflict(self, attempt: Callable[[], Any], what: str) -> Any:
        """attempt() again after a conflict (412, or created meanwhile), with jittered backoff, bounded."""
        try:
            return tenacity.Retrying(
                stop=tenacity.stop_after_attempt(self._attempts),
                wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
                retry=tenacity.retry_if_exception_type(_Conflict), sleep=self._sleep,
            )(attempt)
        except tenacity.RetryError:
            raise errors.LedgerConflict(f"{what} kept changing under {self._attempts} attempts to update it") from None

    def _blob(self, name: str) -> BlobClient:
        """A document of this ledger: under its application's prefix (the fleet's versions are the bot's own)."""
        return self._container_ready().get_blob_client(name if name.startswith("fleet/") else self._prefix + name)

    def _list(self, start: str, **options: Any):
        """Blobs of this ledger whose names start with `start`, named without the application's prefix."""
        for blob in self._container_ready().list_blobs(name_starts_with=self._prefix + start, **options):
            blob.name = blob.name[len(self._prefix):]
            yield blob

    def _container_ready(self) -> ContainerClient:
        """Creates the container on first use, once per instance."""
        if self._ready:
            return self._container
        with self._ready_lock:
            if not self._ready:
                with blob_storage.boundary("creating the ledger container"):
                    try:
                        self._container.create_container()
                    except azure_errors.ResourceExistsError:
                        pass
                    except azure_errors.HttpResponseError as e:
                        if e.status_code != 403:
                            raise
                        # Allowed to write blobs but not to make containers: the deployment made it.
                self._ready = True
        return self._container


def _dump(doc: Release | Environment) -> bytes:
    return _dump_json(doc.to_json())


def _dump_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


def _time_key(release: Release) -> str:
    """index/by-time/<inverted microseconds>-<id>: a listing gives the newest first."""
    micros = (release.created - _EPOCH) // timedelta(microseconds=1)  # exact: no float on the way
    return f"{_BY_TIME}{_MAX_MICROS - micros:017d}-{release.id}"


def _time_of(name: str) -> datetime:
    return _EPOCH + timedelta(microseconds=_MAX_MICROS - int(name[len(_BY_TIME):].partition("-")[0]))


def _archive_blob(environment: str, entries: tuple[Entry, ...]) -> str:
    first = (entries[0].at - _EPOCH) // timedelta(microseconds=1)
    return f"archive/environments/{environment}/{first:017d}-{len(entries):04d}.json"


def _fleet_blob(version: int) -> str:
    return f"fleet/v{version:06d}.json"


def _segment(value: str, what: str, *, creating: bool = False) -> str:
    if not _ID.fullmatch(value):
        # A name that cannot be in the ledger: refused when made, absent when looked for.
        if creating:
            raise errors.InvalidEvent(f"{what} id {value[:40]!r} is not [A-Za-z0-9._-]")
        raise errors.NotFound(f"no {what} {value[:40]!r}")
    return value


def _release_blob(release_id: str, *, creating: bool = False) -> str:
    return f"releases/{_segment(release_id, 'release', creating=creating)}.json"


def _environment_blob(name: str) -> str:
    return f"environments/{_segment(name, 'environment')}.json"


def _event_blob(event_id: str) -> str:
    if _EVENT_ID.fullmatch(event_id):
        return f"events/{event_id}"
    return f"events/sha256={hashlib.sha256(event_id.encode()).hexdigest()}"  # `=` is outside _EVENT_ID


def _what(name: str) -> str:
    kind, _, rest = name.partition("/")
    return f"{kind.removesuffix('s')} {rest.removesuffix('.json')}"
