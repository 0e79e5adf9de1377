"""The decisions: which release should exist, and which may move into each environment of a chain.

Every function here takes state (ledger documents, the newest commit and model) and returns a decision, so
that a lost, duplicated or late event changes nothing: the same state gives the same answer. The rules (see
docs/architecture.md): automatic paths never move an environment to an older release than it runs, never
redeploy a release that was rolled back, and skip held releases; a person can force either, and the ledger
says who.

Pure. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime

from shared import errors, fleet
from shared.releases import Environment, Model, Release, Status, newer

_NUMBER = re.compile(r"(\d+)")


def version_key(version: str) -> tuple:
    """Natural order: "2" < "10", "1.9" < "1.10", "v3" < "v12"; text compares as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _NUMBER.split(version) if part)


def current_model(models: Iterable[Model], names: tuple[str, ...] | str | None = ()) -> Model | None:
    """The model a new release ships: the highest version of the most recently uploaded of `names` (of any
    name when there are none)."""
    names = (names,) if isinstance(names, str) else tuple(names or ())
    models = [m for m in models if not names or m.name in names]
    name = max(models, key=lambda m: m.uploaded).name if models else None
    candidates = [m for m in models if m.name == name]
    return max(candidates, key=lambda m: (version_key(m.version), m.uploaded), default=None)


def superseded_by(new: Release, releases: Iterable[Release]) -> list[Release]:
    """Older releases still in flight, which `new` makes pointless to finish."""
    return [r for r in releases if r.id != new.id and r.status.in_flight and newer(new, r)]


def should_retry_build(release: Release, *, max_attempts: int) -> bool:
    return release.status is Status.FAILED and release.digest is None and release.build_attempts < max_attempts


def refusal(release: Release, environment: Environment, current: Release | None, *,
            automatic: bool, tested_on: str | None = None) -> str:
    """Why `release` may not go to `environment` now ("" when it may). `current` is what the environment runs
    (None when it runs nothing, or something the ledger does not know). A forced manual deploy skips this."""
    if release.digest is None:
        return f"release {release.id} has no image yet"
    if release.status is not Status.GREEN:
        return f"release {release.id} is {release.status.value}, not green" + (f": {release.reason}" if release.reason else "")
    if release.held:
        return f"release {release.id} is held"
    if release.rolled_back:
        return f"release {release.id} was rolled back"
    if tested_on and tested_on not in release.deployed:
        return f"release {release.id} has not been verified on {tested_on}"
    if current is not None:
        if current.id == release.id:
            return f"{environment.name} already runs {release.id}"
        if newer(current, release):
            return f"{environment.name} runs {current.id}, which is newer than {release.id} (no downgrade)"
    del automatic  # the rules are the same; only `force` (handled by the caller) skips them
    return ""


def candidate(releases: Iterable[Release], environment: Environment, current: Release | None, *,
              previous: str | None, gate: Callable[[Release], str] = lambda release: "") -> Release | None:
    """The newest release that may move into `environment` automatically, or None: green, verified on
    `previous` (the environment before it in the chain; None for the first, which takes releases as their smoke
    tests pass), allowed by the rules (`refusal`) and by `gate` (the environment's soak and approval, "" when
    it admits the release). Never one older than what it runs. The first environment that ran a release once
    and moved on (a manual deploy or a rollback) is left where a person put it."""
    for release in sorted(releases, key=lambda r: (r.created, r.id), reverse=True):
        if current is not None and release.id == current.id:
            return None  # everything older would be a downgrade
        if refusal(release, environment, current, automatic=True, tested_on=previous):
            continue
        if previous is None and environment.name in release.deployed:
            return None
        if not gate(release):
            return release
    return None


def gate(release: Release, spec: fleet.Environment, previous: str | None, now: datetime) -> str:
    """Why the gates of environment `spec` keep `release` out now ("" when they let it in): a freeze window,
    an approval it lacks, a soak in the environment before it that is not over. Automatic moves only."""
    window = spec.frozen(now)
    if window is not None:
        return f"{spec.name} is frozen until {window.end.isoformat()}" + (f" ({window.reason})" if window.reason else "")
    if spec.approval and spec.name not in release.approved:
        return f"release {release.id} is not approved for {spec.name} (shipbot approve)"
    if spec.soak_seconds and previous is not None:
        since = release.deployed_at(previous)
        soaked = (now - since).total_seconds() if since is not None else 0.0
        if soaked < spec.soak_seconds:
            return (f"release {release.id} has soaked {soaked / 60:.0f} of {spec.soak_seconds / 60:.0f} minutes "
                    f"on {previous}")
    return ""


def check_environment(name: str, known: Iterable[str]) -> str:
    if name not in known:
        raise errors.NotFound(f"no environment {name!r}; there are {', '.join(known)}")
    return name
