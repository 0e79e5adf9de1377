"""The ports: the small interfaces through which the engine touches the world.

Each port has an in-memory fake (shared/adapters/memory.py), a local adapter (shared/adapters/local/) and a
cloud one (shared/adapters/azure/); tests/contract runs one suite per port against each. Verbs follow the
Azure SDK guidelines: `get_` raises `NotFound` when missing, `list_` may be empty, `create_` raises `Exists`
when it exists (that is how a duplicate delivery is detected), `delete_` is idempotent, `begin_` starts work
that outlives one call and returns a handle.

Errors an adapter raises are those of shared/errors.py: SDK errors are translated at the boundary.

Pure. No I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from shared import fleet
from shared.releases import Commit, Entry, Environment, Model, Release


# -- the ledger ---------------------------------------------------------------------------------------------
class Ledger(Protocol):
    """Releases and environments as JSON documents; every update is a compare-and-swap on the ETag.

    `update_*` reads the document, applies `change` (pure; may be called again after a 412) and writes it with
    `If-Match`, retrying on conflict; `change` returning its input unchanged writes nothing. A missing
    environment reads as an empty one.
    """

    def create_release(self, release: Release) -> None: ...                 # Exists if the id is taken
    def get_release(self, release_id: str) -> Release: ...                  # NotFound
    def list_releases(self) -> list[Release]: ...                           # newest first; every one
    # What a trigger reads instead, however large the ledger: bounded by what is in flight or new.
    def list_in_flight(self) -> list[Release]: ...                          # building, built or testing
    def releases_since(self, moment: datetime | None = None, *, limit: int | None = None) -> list[Release]:
        """Created at or after `moment` (all when None), newest first, at most `limit`."""
        ...

    def find_release_by_digest(self, digest: str) -> Release: ...           # NotFound
    def update_release(self, release_id: str, change: Callable[[Release], Release]) -> Release: ...
    def get_environment(self, name: str) -> Environment: ...                # its recent history only
    def environment_history(self, name: str) -> list[Entry]: ...            # every entry, archived ones too
    def update_environment(self, name: str, change: Callable[[Environment], Environment]) -> Environment: ...

    def lease_environment(self, name: str, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """Holds the one-writer lease on an environment's rollouts; waits for it (bounded; not at all when
        `wait` is false), then LeaseBusy (a TransientError). A holder that dies loses it within a minute."""
        ...

    def lease_release(self, release_id: str, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """The same for one release's smoke test: held while it runs, so that a free lease on a release still
        `testing` means its tester died."""
        ...

    def get_fleet(self, version: int | None = None) -> fleet.Version: ...   # the newest; NotFound if none
    def list_fleet(self) -> list[fleet.Version]: ...                        # newest first
    def put_fleet(self, text: str, *, by: str, at: datetime, reason: str = "") -> fleet.Version:
        """Keeps `text` (validated by the caller) as the next version; earlier ones stay readable."""
        ...

    def create_event_marker(self, event_id: str) -> None: ...               # Exists: seen before
    def delete_event_marker(self, event_id: str) -> None: ...               # so that a failed event can retry


# -- inputs: source and models ------------------------------------------------------------------------------
class Source(Protocol):
    """The application's git repository."""

    def get_head(self, branch: str) -> Commit: ...                          # newest commit on the branch
    def get_commit(self, sha: str) -> Commit: ...                           # NotFound
    def archive(self, sha: str, destination: Path) -> None:
        """Writes the tree at `sha` into `destination` (a directory)."""
        ...

    def read_file(self, sha: str, path: str, *, max_bytes: int) -> bytes:
        """One file of the tree at `sha` (e.g. the quality gate's evaluation set); NotFound when it has none,
        PermanentError when it is larger than `max_bytes`."""
        ...


class Models(Protocol):
    """The models container: `<name>/<version>/<file>`, the model file plus its sample request/response."""

    def list_models(self, names: tuple[str, ...] = ()) -> list[Model]: ...  # every complete version (of `names`
                                                                            # only, when given), any order
    def get_model(self, name: str, version: str) -> Model: ...              # NotFound
    def download(self, model: Model, destination: Path) -> None:
        """Writes every file of the version into `destination`, streaming (never whole in memory)."""
        ...

    def read_file(self, model: Model, path: str, *, max_bytes: int) -> bytes:
        """A file that travels with the version but is not the model (the quality gate's evaluation set): the
        blob `<name>/<version>/<path>`, or an artifact of the registry version's run. NotFound when there is
        none; PermanentError when it is larger than `max_bytes`."""
        ...


# -- build, registry, smoke test, deploy --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BuildRequest:
    release_id: str
    commit: str
    model: Model
    repository: str
    tag: str
    source_url: str = ""


class BuildState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the builder has no record of it (lost with a restarted local host, or expired)


@dataclass(frozen=True, slots=True)
class Build:
    build_id: str
    state: BuildState
    digest: str | None = None
    error: str = ""
    log_url: str = ""
    steps: tuple[tuple[str, float], ...] = ()  # (step, seconds), e.g. ("build", 31.2), ("push", 2.1)


class Builder(Protocol):
    """Builds asynchronously, like ACR Tasks: the registry's push event continues the chain."""

    recipe: str  # what, besides commit and model, decides the image bytes (part of the release key)

    def begin_build(self, request: BuildRequest, source: Source, models: Models) -> str: ...  # a build id
    def get_build(self, build_id: str) -> Build: ...


@dataclass(frozen=True, slots=True)
class Image:
    repository: str
    digest: str
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


class Registry(Protocol):
    host: str  # host[:port] as images are referenced: `<host>/<repository>@<digest>`

    def get_image(self, repository: str, reference: str) -> Image: ...  # tag or digest; NotFound


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a smoke test or a rollout's verification checks `/version` against."""

    release_id: str | None  # None: not checked (a foreign image that was built without one)
    model_sha256: str | None = None
    commit: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reason: str = ""       # why it failed; empty when it passed
    seconds: float = 0.0
    steps: tuple[tuple[str, float], ...] = ()  # (step, seconds) for benchmarks and the ledger
    predictions: tuple[Any, ...] | None = None  # the candidate's answers to an evaluation set's rows, in order


@dataclass(frozen=True, slots=True)
class Evaluation:
    """An evaluation set for the smoke runner to send through the candidate's scoring route once it passed."""

    rows: list[list[float]]
    batch: int = 500
    seconds: float = 120.0


class SmokeRunner(Protocol):
    def run(self, ref: str, expected: Expectation, *, evaluation: Evaluation | None = None) -> Verdict:
        """Runs the image by digest, waits for /readyz, checks /version against `expected` and that the image's
        sample request scores to its sample response, all within the runner's time budget. With `evaluation`,
        then scores its rows batch by batch (within its own budget) and returns the answers as `predictions`;
        a batch that fails fails the verdict, naming its rows."""
        ...


class Deployer(Protocol):
    """Environments: staging and production. One rollout at a time per environment (the ledger's lease)."""

    def get_running(self, environment: str) -> str | None: ...  # the ref it runs, None if nothing
    def deploy(self, environment: str, ref: str, expected: Expectation) -> Verdict:
        """Rolls `ref` out, waits until it is available, verifies /version. A failed verdict leaves the
        environment on what it ran before whenever the target allows (the engine rolls back otherwise)."""
        ...

    def url(self, environment: str) -> str: ...


class Notifier(Protocol):
    def notify(self, subject: str, text: str, *, failed: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class Ports:
    """Everything the engine talks to; one wiring function (shared/wiring.py) picks the adapters."""

    ledger: Ledger
    source: Source
    models: Models
    builder: Builder
    registry: Registry
    smoke: SmokeRunner
    deployer: Deployer
    notifier: Notifier
    clock: Callable[[], datetime]

