"""In-memory fakes of every port, for the engine's fast tests and the contract suites.

They keep the ports' contracts (NotFound, Exists, compare-and-swap updates, one lease holder at a time) so
that a test passing over them says something about the real adapters too; tests/contract checks that each
real adapter behaves like its fake. Thread-safe, because the engine's concurrency tests use threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared import errors, fleet, ports
from shared.releases import Commit, Entry, Environment, Model, Release, split_history


class MemoryLedger:
    def __init__(self, *, lease_wait_seconds: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._releases: dict[str, dict] = {}
        self._environments: dict[str, dict] = {}
        self._markers: set[str] = set()
        self._fleet: list[fleet.Version] = []
        self._archive: dict[str, list[Entry]] = {}  # environment -> history entries its document let go
        self._leases: dict[str, threading.Lock] = {}
        self.lease_wait_seconds = lease_wait_seconds
        self.writes = 0  # documents written, for tests that check "nothing changed"

    def create_release(self, release: Release) -> None:
        with self._lock:
            if release.id in self._releases:
                raise errors.Exists(f"release {release.id} exists")
            self._releases[release.id] = release.to_json()
            self.writes += 1

    def get_release(self, release_id: str) -> Release:
        with self._lock:
            doc = self._releases.get(release_id)
        if doc is None:
            raise errors.NotFound(f"no release {release_id}")
        return Release.from_json(doc)

    def list_releases(self) -> list[Release]:
        with self._lock:
            docs = list(self._releases.values())
        return sorted((Release.from_json(d) for d in docs), key=lambda r: (r.created, r.id), reverse=True)

    def list_in_flight(self) -> list[Release]:
        return [r for r in self.list_releases() if r.status.in_flight]

    def releases_since(self, moment: datetime | None = None, *, limit: int | None = None) -> list[Release]:
        found = [r for r in self.list_releases() if moment is None or r.created >= moment]
        return found[:limit] if limit is not None else found

    def find_release_by_digest(self, digest: str) -> Release:
        for release in self.list_releases():
            if release.digest == digest:
                return release
        raise errors.NotFound(f"no release has the image {digest}")

    def update_release(self, release_id: str, change: Callable[[Release], Release]) -> Release:
        with self._lock:
            if release_id not in self._releases:
                raise errors.NotFound(f"no release {release_id}")
            before = Release.from_json(self._releases[release_id])
            after = change(before)
            if after != before:
                self._releases[release_id] = after.to_json()
                self.writes += 1
            return after

    def get_environment(self, name: str) -> Environment:
        with self._lock:
            doc = self._environments.get(name)
        return Environment.from_json(doc) if doc else Environment(name)

    def update_environment(self, name: str, change: Callable[[Environment], Environment]) -> Environment:
        with self._lock:
            doc = self._environments.get(name)
            before = Environment.from_json(doc) if doc else Environment(name)
            after, archived = split_history(change(before))
            if after != before:
                self._archive.setdefault(name, []).extend(archived)
                self._environments[name] = after.to_json()
                self.writes += 1
            return after

    def environment_history(self, name: str) -> list[Entry]:
        with self._lock:
            archived = list(self._archive.get(name, []))
        return archived + list(self.get_environment(name).history)

    def lease_environment(self, name: str, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        return self._lease(name, wait=wait)

    def lease_release(self, release_id: str, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        return self._lease(f"releases/{release_id}", wait=wait)

    @contextlib.contextmanager
    def _lease(self, name: str, *, wait: bool) -> Iterator[None]:
        with self._lock:
            lease = self._leases.setdefault(name, threading.Lock())
        if not (lease.acquire(timeout=self.lease_wait_seconds) if wait else lease.acquire(blocking=False)):
            raise errors.LeaseBusy(f"another worker holds {name}")
        try:
            yield
        finally:
            lease.release()

    def get_fleet(self, version: int | None = None) -> fleet.Version:
        with self._lock:
            versions = list(self._fleet)
        found = versions[-1:] if version is None else [v for v in versions if v.version == version]
        if not found:
            raise errors.NotFound("no fleet file was applied" if version is None else f"no fleet version {version}")
        return found[0]

    def list_fleet(self) -> list[fleet.Version]:
        with self._lock:
            return list(reversed(self._fleet))

    def put_fleet(self, text: str, *, by: str, at: datetime, reason: str = "") -> fleet.Version:
        with self._lock:
            applied = fleet.Version(len(self._fleet) + 1, text, by, at, reason)
            self._fleet.append(applied)
            self.writes += 1
            return applied

    def create_event_marker(self, event_id: str) -> None:
        with self._lock:
            if event_id in self._markers:
                raise errors.Exists(f"event {event_id} seen before")
            self._markers.add(event_id)

    def delete_event_marker(self, event_id: str) -> None:
        with self._lock:
            self._markers.discard(event_id)


class MemoryModels:
    """Models as (name, version) -> bytes of the model file, plus the sidecar files."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], dict[str, bytes]] = {}
        self._models: dict[tuple[str, str], Model] = {}

    def put(self, name: str, version: str, files: dict[str, bytes], *, uploaded: datetime,
            model_file: str = "model.joblib") -> Model:
        model = Model(name=name, version=version, sha256=hashlib.sha256(files[model_file]).hexdigest(),
                      blob_name=f"{name}/{version}/{model_file}", uploaded=uploaded)
        self._files[(name, version)] = dict(files)
        self._models[(name, version)] = model
        return model

    def list_models(self, names: tuple[str, ...] = ()) -> list[Model]:
        return [m for m in self._models.values() if not names or m.name in names]

    def get_model(self, name: str, version: str) -> Model:
        try:
            return self._models[(name, version)]
        except KeyError:
            raise errors.NotFound(f"no model {name}/{version}") from None

    def download(self, model: Model, destination: Path) -> None:
        destination.mkdir(parents=True, exist_ok=True)
        for filename, data in self._files[(model.name, model.version)].items():
            (destination / filename).write_bytes(data)

    def read_file(self, model: Model, path: str, *, max_bytes: int) -> bytes:
        try:
            data = self._files[(model.name, model.version)][path]
        except KeyError:
            raise errors.NotFound(f"model {model.name}/{model.version} has no file {path}") from None
        if len(data) > max_bytes:
            raise errors.PermanentError(f"{path} of model {model.name}/{model.version} takes {len(data):,} bytes, "
                                        f"more than {max_bytes:,}")
        return data


class MemorySource:
    def __init__(self) -> None:
        self._commits: dict[str, Commit] = {}
        self._heads: dict[str, str] = {}
        self.files: dict[str, dict[str, bytes]] = {}  # sha -> path -> bytes

    def commit(self, sha: str, *, branch: str = "main", at: datetime, files: dict[str, bytes] | None = None) -> Commit:
        self._commits[sha] = commit = Commit(sha=sha, branch=branch, committed=at)
        self._heads[branch] = sha
        if files is not None:
            self.files[sha] = dict(files)
        return commit

    def get_head(self, branch: str) -> Commit:
        if branch not in self._heads:
            raise errors.NotFound(f"no branch {branch}")
        return self._commits[self._heads[branch]]

    def get_commit(self, sha: str) -> Commit:
        try:
            return self._commits[sha]
        except KeyError:
            raise errors.NotFound(f"no commit {sha}") from None

    def archive(self, sha: str, destination: Path) -> None:
        self.get_commit(sha)
        (destination / "COMMIT").write_text(sha)
        for path, data in self.files.get(sha, {}).items():
            (destination / path).parent.mkdir(parents=True, exist_ok=True)
            (destination / path).write_bytes(data)

    def read_file(self, sha: str, path: str, *, max_bytes: int) -> bytes:
        self.get_commit(sha)
        try:
            data = self.files.get(sha, {})[path]
        except KeyError:
            raise errors.NotFound(f"commit {sha[:12]} has no file {path}") from None
        if len(data) > max_bytes:
            raise errors.PermanentError(f"{path} at {sha[:12]} takes {len(data):,} bytes, more than {max_bytes:,}")
        return data


@dataclass
class MemoryBuilder:
    """Records build requests; a test finishes them with `succeed`/`fail`, as a remote build service would."""

    recipe: str = "memory:1"
    labels: dict[str, str] = field(default_factory=dict)  # put on every image it pushes (e.g. an [evaluate] spec)
    requests: dict[str, ports.BuildRequest] = field(default_factory=dict)
    builds: dict[str, ports.Build] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def begin_build(self, request: ports.BuildRequest, source: ports.Source, models: ports.Models) -> str:
        build_id = f"b{next(self._ids)}"
        self.requests[build_id] = request
        self.builds[build_id] = ports.Build(build_id, ports.BuildState.RUNNING)
        return build_id

    def get_build(self, build_id: str) -> ports.Build:
        return self.builds.get(build_id, ports.Build(build_id, ports.BuildState.UNKNOWN))

    def succeed(self, build_id: str, registry: MemoryRegistry) -> str:
        """Pushes the image to `registry` and returns its digest; the test then delivers ImagePushed."""
        request = self.requests[build_id]
        digest = "sha256:" + hashlib.sha256(f"{request.repository}:{request.tag}".encode()).hexdigest()
        registry.push(request.repository.split("/", 1)[1], request.tag, digest,
                      labels={**self.labels, "dev.shipbot.release.id": request.release_id})
        self.builds[build_id] = ports.Build(build_id, ports.BuildState.SUCCEEDED, digest=digest)
        return digest

    def fail(self, build_id: str, error: str) -> None:
        self.builds[build_id] = ports.Build(build_id, ports.BuildState.FAILED, error=error)


class MemoryRegistry:
    """Images by (repository path without the host, tag or digest)."""

    def __init__(self, host: str = "registry.test") -> None:
        self.host = host
        self._images: dict[tuple[str, str], ports.Image] = {}  # (repository, tag or digest)

    def push(self, repository: str, tag: str | None, digest: str, *, labels: dict[str, str] | None = None) -> None:
        image = ports.Image(repository, digest, dict(labels or {}))
        self._images[(repository, digest)] = image
        if tag:
            self._images[(repository, tag)] = image

    def get_image(self, repository: str, reference: str) -> ports.Image:
        try:
            return self._images[(repository, reference)]
        except KeyError:
            raise errors.NotFound(f"no image {repository}:{reference}") from None


class MemorySmokeRunner:
    """Passes every image, unless a test named it in `failures` (ref -> reason). An evaluation set is answered by
    `models[ref]` (a function of one row), else by `model` (the sum of the row)."""

    def __init__(self) -> None:
        self.failures: dict[str, str] = {}
        self.runs: list[str] = []
        self.models: dict[str, Callable[[list[float]], Any]] = {}
        self.model: Callable[[list[float]], Any] = sum  # what answers a ref that `models` does not name
        self.evaluations: list[tuple[str, ports.Evaluation]] = []

    def run(self, ref: str, expected: ports.Expectation, *,
            evaluation: ports.Evaluation | None = None) -> ports.Verdict:
        self.runs.append(ref)
        reason = self.failures.get(ref, "")
        if reason or evaluation is None:
            return ports.Verdict(passed=not reason, reason=reason)
        self.evaluations.append((ref, evaluation))
        model = self.models.get(ref, self.model)
        return ports.Verdict(passed=True, predictions=tuple(model(row) for row in evaluation.rows))


class MemoryDeployer:
    """Environments as a dict; a ref in `broken` fails verification and the environment keeps what it ran."""

    def __init__(self) -> None:
        self.running: dict[str, str] = {}
        self.broken: dict[str, str] = {}
        self.rollouts: list[tuple[str, str]] = []
        self._active = 0
        self.max_concurrent = 0  # the most rollouts ever in progress at once, per the lease tests
        self._lock = threading.Lock()
        self.during_rollout: Callable[[], None] = lambda: None  # a hook for concurrency tests

    def get_running(self, environment: str) -> str | None:
        return self.running.get(environment)

    def deploy(self, environment: str, ref: str, expected: ports.Expectation) -> ports.Verdict:
        with self._lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
        try:
            self.rollouts.append((environment, ref))
            self.during_rollout()
            reason = self.broken.get(ref, "")
            if not reason:
                self.running[environment] = ref
            return ports.Verdict(passed=not reason, reason=reason)
        finally:
            with self._lock:
                self._active -= 1

    def url(self, environment: str) -> str:
        return f"http://{environment}.test"


class MemoryNotifier:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str, bool]] = []

    def notify(self, subject: str, text: str, *, failed: bool = False) -> None:
        self.messages.append((subject, text, failed))


class ManualClock:
    """A clock a test moves by hand: every reading is one second after the last, so order is total."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now
