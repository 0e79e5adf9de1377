"""Releases and environments: the ledger's documents, as frozen values.

A release is a pure function of its inputs. Its key hashes (source commit, model sha256, build recipe), its
id and image tag derive from the key, so asking twice for one release builds once and a redelivered event
converges on the same document. An image that another pipeline pushed has no such inputs: its id derives from
its digest. The JSON form (`to_json`/`from_json`) is the ledger's stable contract, documented in docs/ledger.md.

Pure. No I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

class Status(enum.StrEnum):
    BUILDING = "building"      # a build was started (or is about to be); waits for its image
    BUILT = "built"            # the image is in the registry; not smoke-tested yet
    TESTING = "testing"        # a smoke test is running
    GREEN = "green"            # the smoke test passed; may go to staging, then production
    FAILED = "failed"          # the build or the smoke test failed; `reason` says why
    SUPERSEDED = "superseded"  # a newer release was planned while this one was in flight

    @property
    def in_flight(self) -> bool:
        return self in (Status.BUILDING, Status.BUILT, Status.TESTING)


@dataclass(frozen=True, slots=True)
class Model:
    """One model version in the models container: `<name>/<version>/` holds its files."""

    name: str
    version: str
    sha256: str       # of the model file (the one model_api loads), hex
    blob_name: str    # the model file, `<name>/<version>/<file>`
    uploaded: datetime


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The quality gate's figures for a release: its metric on the evaluation set, production's on the same set
    (the baseline, when production's release was evaluated on it), and the verdict."""

    metric: str
    value: float | None           # None: the candidate could not be scored (see `reason`)
    data: str                     # the set's path in the repository
    data_sha256: str
    rows: int
    passed: bool
    reason: str                   # both figures, in words
    baseline: float | None = None
    baseline_release: str | None = None
    seconds: float = 0.0
    overridden_by: str = ""       # who let a failed gate pass, and why
    override_reason: str = ""


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    branch: str
    committed: datetime
    source_url: str = ""  # scheme, host and path only


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a document's history: what happened, when, who or what caused it."""

    at: datetime
    what: str
    by: str
    detail: str = ""


def release_key(commit: str, model_sha256: str, recipe: str) -> str:
    return hashlib.sha256(f"{commit}\n{model_sha256}\n{recipe}".encode()).hexdigest()


def release_id_for(commit: str, model_sha256: str, recipe: str) -> str:
    """`r-` and 16 hex digits of the key: short enough to read aloud, long enough never to collide here."""
    return "r-" + release_key(commit, model_sha256, recipe)[:16]


def release_id_for_digest(digest: str) -> str:
    """A foreign image (pushed by another pipeline): its id is its digest's."""
    return "i-" + digest.removeprefix("sha256:")[:16]


@dataclass(frozen=True, slots=True)
class Release:
    id: str
    created: datetime
    trigger: str                  # what asked for it: "model_uploaded", "git_push", "manual", "image_pushed", ...
    repository: str
    tag: str
    status: Status
    commit: str | None = None     # None for a foreign image whose labels do not say
    model: Model | None = None
    recipe: str = ""
    digest: str | None = None     # set once the image is in the registry
    build_id: str | None = None
    build_attempts: int = 0
    reason: str = ""              # why it failed, in words an operator can act on
    held: bool = False
    rolled_back: bool = False     # rolled back from some environment: never promoted automatically again
    deployed: tuple[str, ...] = ()  # environments it was verified on, in order
    history: tuple[Entry, ...] = ()
    approved: tuple[str, ...] = ()  # environments a person approved it for (`shipbot approve`)
    evaluation: Evaluation | None = None  # the quality gate's figures, when the image declares an evaluation

    @property
    def ref(self) -> str | None:
        """The image by digest, `repository@sha256:...`: what is smoke-tested is what runs."""
        return f"{self.repository}@{self.digest}" if self.digest else None

    def with_(self, *, entry: Entry | None = None, **changes: Any) -> Release:
        if entry is not None:
            changes["history"] = self.history + (entry,)
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Release:
        return cls(
            id=doc["id"], created=_time(doc["created"]), trigger=doc["trigger"], repository=doc["repository"],
            tag=doc["tag"], status=Status(doc["status"]), commit=doc.get("commit"),
            model=_model(doc["model"]) if doc.get("model") else None, recipe=doc.get("recipe", ""),
            digest=doc.get("digest"), build_id=doc.get("build_id"), build_attempts=doc.get("build_attempts", 0),
            reason=doc.get("reason", ""), held=doc.get("held", False), rolled_back=doc.get("rolled_back", False),
            deployed=tuple(doc.get("deployed", ())), history=tuple(_entry(e) for e in doc.get("history", ())),
            approved=tuple(doc.get("approved", ())),
            evaluation=_evaluation(doc.get("evaluation")),
        )

    def deployed_at(self, environment: str) -> datetime | None:
        """When it last went live on `environment`, from its history (None if it never did)."""
        return next((e.at for e in reversed(self.history) if e.what == f"deployed to {environment}"), None)


@dataclass(frozen=True, slots=True)
class Deployment:
    """What an environment runs: a release, by digest."""

    release_id: str
    ref: str          # repository@sha256:...
    at: datetime
    by: str


@dataclass(frozen=True, slots=True)
class Environment:
    name: str
    current: Deployment | None = None
    previous: Deployment | None = None  # what a rollback goes back to
    history: tuple[Entry, ...] = ()
    pending: str | None = None  # the job message of the rollout under way: a dead worker's is redone
    blocked: str | None = None  # why automatic rollouts here stopped (one failed for good); a success clears it
    scheduled: datetime | None = None  # a `schedule` rule's last slot handled (or when the rule was first seen)

    def with_(self, *, entry: Entry | None = None, **changes: Any) -> Environment:
        if entry is not None:
            changes["history"] = self.history + (entry,)
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Environment:
        return cls(name=doc["name"], current=_deployment(doc.get("current")),
                   previous=_deployment(doc.get("previous")),
                   history=tuple(_entry(e) for e in doc.get("history", ())), pending=doc.get("pending"),
                   blocked=doc.get("blocked"), scheduled=_time(doc["scheduled"]) if doc.get("scheduled") else None)


HISTORY_LIMIT = 150  # an environment document holds at most this many history entries ...
HISTORY_CHUNK = 50   # ... and once it would hold more, its oldest this many go to the archive


def split_history(env: Environment) -> tuple[Environment, tuple[Entry, ...]]:
    """(the document to write, the entries to archive first): environments' histories stay bounded, and the
    ledger keeps what leaves them readable (`Ledger.environment_history`)."""
    if len(env.history) <= HISTORY_LIMIT:
        return env, ()
    return env.with_(history=env.history[HISTORY_CHUNK:]), env.history[:HISTORY_CHUNK]


def entries_to_json(entries: tuple[Entry, ...]) -> list[dict[str, Any]]:
    return _to_json(entries)


def entries_from_json(docs: list[dict[str, Any]]) -> tuple[Entry, ...]:
    return tuple(_entry(doc) for doc in docs)


def newer(a: Release, b: Release) -> bool:
    """Whether `a` came after `b`: releases are ordered by when they were planned, then by id."""
    return (a.created, a.id) > (b.created, b.id)


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _model(doc: dict[str, Any]) -> Model:
    return Model(name=doc["name"], version=doc["version"], sha256=doc["sha256"], blob_name=doc["blob_name"],
                 uploaded=_time(doc["uploaded"]))


def _evaluation(doc: dict[str, Any] | None) -> Evaluation | None:
    if not doc:
        return None
    return Evaluation(**{f.name: doc[f.name] for f in dataclasses.fields(Evaluation) if f.name in doc})


def _entry(doc: dict[str, Any]) -> Entry:
    return Entry(at=_time(doc["at"]), what=doc["what"], by=doc["by"], detail=doc.get("detail", ""))


def _deployment(doc: dict[str, Any] | None) -> Deployment | None:
    if not doc:
        return None
    return Deployment(release_id=doc["release_id"], ref=doc["ref"], at=_time(doc["at"]), by=doc["by"])

