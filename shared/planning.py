"""The decisions: which release should exist, which may go to staging, which to production.

Every function here takes state (ledger documents, the newest commit and model) and returns a decision, so
that a lost, duplicated or late event changes nothing: the same state gives the same answer. The rules (see
docs/architecture.md): automatic paths never move an environment to an older release than it runs, never
redeploy a release that was rolled back, and skip held releases; a person can force either, and the ledger
says who.

Pure. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shared import errors
from shared.releases import Environment, Model, Release, Status, newer

_NUMBER = re.compile(r"(\d+)")


def version_key(version: str) -> tuple:
    """Natural order: "2" < "10", "1.9" < "1.10", "v3" < "v12"; text compares as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _NUMBER.split(version) if part)


def current_model(models: Iterable[Model], name: str | None = None) -> Model | None:
    """The model a new release ships: the highest version of `name` (or of the most recently uploaded name)."""
    models = list(models)
    if name is None and models:
        name = max(models, key=lambda m: m.uploaded).name
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


def staging_candidate(releases: Iterable[Release], staging: Environment, current: Release | None) -> Release | None:
    """The newest green release that staging should run and does not: what reconcile rolls out."""
    for release in sorted(releases, key=lambda r: (r.created, r.id), reverse=True):
        if release.status is Status.GREEN and not refusal(release, staging, current, automatic=True):
            if "staging" in release.deployed:
                return None  # staging ran it once and moved on (a manual deploy or rollback): leave it be
            return release
        if current is not None and release.id == current.id:
            return None  # everything older would be a downgrade
    return None


def promotion_candidate(releases: Iterable[Release], production: Environment,
                        current: Release | None) -> Release | None:
    """The newest release verified on staging that may go to production, or None."""
    for release in sorted(releases, key=lambda r: (r.created, r.id), reverse=True):
        if not refusal(release, production, current, automatic=True, tested_on="staging"):
            return release
        if current is not None and release.id == current.id:
            return None
    return None


def check_environment(name: str, known: Iterable[str]) -> str:
    if name not in known:
        raise errors.NotFound(f"no environment {name!r}; there are {', '.join(known)}")
    return name
