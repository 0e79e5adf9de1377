"""What an operator can ask for by HTTP or with the CLI: build, deploy, promote, roll back, hold, inspect.

Each request is checked here, at once, so that the API can answer 404/409 with a reason; the long part
(rollout, rollback) becomes a job, and the API answers 202 with the release id. A person may force a deploy
past the automatic rules (no downgrade, held, rolled back, not verified on staging); the ledger records who
forced it and why.

Raises shared.errors. No I/O of its own: everything goes through the engine's ports.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from shared import errors, events, fleet, jobs, planning
from shared.engine import Engine
from shared.jobs import Job
from shared.ports import Ledger
from shared.releases import Entry, Environment, Release, Status


def build(engine: Engine, *, commit: str | None, model: str | None, by: str) -> tuple[Release, bool]:
    """The release of `commit` (default: the release branch's head) and `model` ("name/version"; default:
    the current model). Returns (release, created). A release whose build failed is built again."""
    ports = engine.ports
    if ports.source is None:
        raise errors.Refused("this application has no source repository: its releases come from image pushes")
    sha = ports.source.get_commit(commit).sha if commit else ports.source.get_head(engine.config.release_branch).sha
    if model:
        name, _, version = model.partition("/")
        if not name or not version:
            raise errors.InvalidEvent(f"model must be name/version, not {model!r}")
        chosen = ports.models.get_model(name, version)
    else:
        chosen = planning.current_model(ports.models.list_models(engine.config.models), engine.config.models)
        if chosen is None:
            raise errors.NotFound("no complete model in the models container yet; upload one first")
    release, created = engine.create_release(sha, chosen, trigger=f"manual build by {by}", by=by)
    if not created and release.status is Status.FAILED and release.digest is None:
        return engine.start_build(release, by=by, retry=True), True
    return release, created


def deploy(engine: Engine, environment: str, *, release_id: str | None = None, digest: str | None = None,
           by: str, reason: str = "", force: bool = False) -> Job:
    engine.spec(environment)
    release = _find(engine, release_id, digest)
    _check(engine, release, environment, force=force)
    return jobs.rollout(environment, release.id, by=by, reason=reason, force=force, automatic=False)


def promote(engine: Engine, *, to: str | None = None, release_id: str | None = None, by: str, reason: str = "",
            force: bool = False) -> Job:
    """Into environment `to` (default: the last of the chain) the release given, or else the newest one verified
    on the environment before it that its rules admit (a person's promotion skips the gates: soak, approval,
    freeze)."""
    to = to or engine.environments[-1]
    previous = engine.previous(to)
    if previous is None:
        raise errors.Refused(f"{to} is the first environment: releases reach it from their smoke test "
                             "(deploy one by name instead)")
    if release_id is None:
        env = engine.ledger.get_environment(to)
        current = engine.current_release(env)
        candidate = planning.candidate(engine.releases_since(current), env, current, previous=previous)
        if candidate is None:
            raise errors.Refused(f"nothing to promote: no release verified on {previous} is newer than {to}'s")
        release_id = candidate.id
    release = _find(engine, release_id, None)
    _check(engine, release, to, force=force)
    return jobs.rollout(to, release.id, by=by, reason=reason or "promoted", force=force, automatic=False)


def approve(engine: Engine, environment: str, release_id: str, *, by: str, reason: str) -> tuple[Release, Job | None]:
    """Lets `release_id` through the approval gate of `environment`, recorded with who and why. An `on_green` or
    `manual` environment takes it at once (if its other rules and gates admit it); a `schedule` one at its slot."""
    spec = engine.spec(environment)
    if not spec.approval:
        raise errors.Refused(f"{environment} needs no approval (its chain entry has no `approval: true`)")
    if not reason.strip():
        raise errors.InvalidEvent("an approval needs a reason: the ledger records who approved and why")
    now = engine.ports.clock()
    release = engine.ledger.update_release(release_id, lambda r: r if environment in r.approved else r.with_(
        approved=r.approved + (environment,), entry=Entry(now, f"approved for {environment}", by, reason)))
    if spec.rule == "manual":
        _check(engine, release, environment, force=False)
        return release, jobs.rollout(environment, release.id, by=by, reason=f"approved: {reason}", automatic=False)
    if spec.rule == "on_green":
        return release, engine.advance(spec, by=by, reason=f"approved: {reason}")
    return release, None


def override(engine: Engine, release_id: str, *, by: str, reason: str) -> tuple[Release, Job | None]:
    """Lets a release that the quality gate stopped go on as if it had passed: green, with who and why kept in its
    figures and its history; the first environment takes it if its rule is on_green (and its gates admit it)."""
    if not reason.strip():
        raise errors.InvalidEvent("an override needs a reason: the ledger records who let the release pass and why")
    now, done = engine.ports.clock(), [False]

    def change(r: Release) -> Release:
        done[0] = r.status is Status.FAILED and r.evaluation is not None and not r.evaluation.passed
        if not done[0]:
            return r
        figures = dataclasses.replace(r.evaluation, overridden_by=by, override_reason=reason)
        return r.with_(status=Status.GREEN, reason="", evaluation=figures,
                       entry=Entry(now, "quality gate overridden", by, f"{reason}; {r.evaluation.reason}"))

    release = engine.ledger.update_release(release_id, change)
    if not done[0]:
        raise errors.Refused(f"release {release_id} is {release.status.value}"
                             + ("" if release.evaluation is None or release.evaluation.passed else
                                f"; its gate already was overridden by {release.evaluation.overridden_by}")
                             + ": only a release the quality gate failed can be overridden")
    first = engine.config.chain[0]
    return release, (engine.advance(first, by=by, reason=f"gate overridden: {reason}")
                     if first.rule == "on_green" else None)


def rollback(engine: Engine, environment: str, *, by: str, reason: str) -> Job:
    env = engine.ledger.get_environment(engine.spec(environment).name)
    if env.previous is None:
        raise errors.Refused(f"{environment} has no previous release to roll back to")
    return jobs.rollback(environment, env.previous.release_id, by=by, reason=reason)


def hold(engine: Engine, release_id: str, *, by: str, reason: str, held: bool = True) -> Release:
    now = engine.ports.clock()
    what = "held" if held else "unheld"
    return engine.ledger.update_release(release_id, lambda r: r.with_(
        held=held, entry=Entry(now, what, by, reason)) if r.held != held else r)


def environments(engine: Engine) -> list[tuple[Environment, str | None, str]]:
    """Each environment as the ledger has it, with the ref its target really runs and its URL."""
    return [(engine.ledger.get_environment(name), engine.ports.deployer.get_running(name),
             engine.ports.deployer.url(name)) for name in engine.environments]


def environment_history(engine: Engine, environment: str) -> list[Entry]:
    """Every entry of an environment's history, oldest first: what its document holds and what it archived."""
    return engine.ledger.environment_history(engine.spec(environment).name)


def _find(engine: Engine, release_id: str | None, digest: str | None) -> Release:
    if release_id:
        return engine.ledger.get_release(release_id)
    if digest:
        if not events.DIGEST.fullmatch(digest):
            raise errors.InvalidEvent(f"digest {digest[:80]!r} is not sha256: followed by 64 lowercase hex digits")
        try:
            return engine.ledger.find_release_by_digest(digest)
        except errors.NotFound:
            raise errors.NotFound(f"no release has the image {digest}; push it to an allowed repository first") \
                from None
    raise errors.InvalidEvent("give a release_id or a digest")


def _check(engine: Engine, release: Release, environment: str, *, force: bool) -> None:
    if release.digest is None:
        raise errors.Refused(f"release {release.id} has no image yet ({release.status.value})")
    if force:
        return
    env = engine.ledger.get_environment(environment)
    why = planning.refusal(release, env, engine.current_release(env), automatic=False,
                           tested_on=engine.previous(environment))
    if why:
        raise errors.Refused(f"{why}; use force to deploy anyway (the ledger records who and why)")


# -- the fleet ----------------------------------------------------------------------------------------------------
def apply_fleet(ledger: Ledger, text: str, *, by: str, at: datetime, reason: str = "") -> fleet.Version:
    """Validates the whole file (fleet.FleetError lists every problem, and nothing is applied), then keeps it
    as the next version in the bot's ledger, with who applied it and why."""
    fleet.parse(text)
    return ledger.put_fleet(text, by=by, at=at, reason=reason)


def fleet_version(ledger: Ledger, default: fleet.Fleet, version: int | None = None, *,
                  now: datetime) -> tuple[fleet.Version, fleet.Fleet]:
    """The fleet in force (or an earlier version), parsed; version 0, `default`, when none was applied: the
    fleet the app settings describe."""
    try:
        applied = ledger.get_fleet(version or None)
    except errors.NotFound:
        if version:
            raise
        return fleet.Version(0, fleet.dump(default), "the app settings", now,
                             "no fleet file applied: the app settings describe one application"), default
    return applied, fleet.parse(applied.text)
