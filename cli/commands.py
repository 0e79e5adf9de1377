"""The verbs that talk to the API: each takes the parsed arguments and a context, prints, returns an exit code.

stdout carries the answer (a table, a detail view, `--json`); stderr carries progress and notes. Errors are
raised (client.ApiError, client.Unreachable, Usage) and turned into messages and exit codes by cli.main.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from cli import render, watch
from cli.client import ApiError, Client
from cli.progress import Progress

OK, FAILED, TIMED_OUT = 0, 1, 3


class Usage(Exception):
    """The arguments make no sense together: exit 2."""


@dataclass
class Context:
    client: Client
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    tty: bool | None = None  # stderr is a terminal; None: ask it

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def json(self, doc: Any) -> None:
        self.print(json.dumps(doc, indent=2, sort_keys=False))

    def progress(self) -> Progress:
        return Progress(self.err, tty=self.tty, clock=self.clock)


def status(args: argparse.Namespace, ctx: Context) -> int:
    if not ctx.client.app:
        apps = ctx.client.list_apps()
        if len(apps) > 1:
            if args.json:
                ctx.json({"apps": apps})
            else:
                ctx.print(render.fleet_view(apps, now=ctx.now()))
            return OK
    environments = ctx.client.list_environments()
    releases = ctx.client.list_releases(limit=args.limit)
    if args.json:
        ctx.json({"environments": environments, "releases": releases})
        return OK
    listed = {r.get("id") for r in releases}
    known = {}
    for env in environments:  # an environment may run a release older than the listed ones
        rid = (env.get("current") or {}).get("release_id")
        if rid and rid not in listed and rid not in known:
            try:
                known[rid] = ctx.client.get_release(rid)
            except ApiError as e:
                if e.status != 404:
                    raise
    ctx.print(render.status_view(environments, releases, known=known, now=ctx.now()))
    return OK


def releases(args: argparse.Namespace, ctx: Context) -> int:
    docs = ctx.client.list_releases(limit=args.limit)
    if args.json:
        ctx.json({"releases": docs})
    else:
        ctx.print(render.releases_table(docs, now=ctx.now()) if docs else "no releases yet")
    return OK


def release(args: argparse.Namespace, ctx: Context) -> int:
    doc = ctx.client.get_release(args.release_id)
    if args.json:
        ctx.json(doc)
    else:
        ctx.print(render.release_view(doc, now=ctx.now()))
    return OK


def build(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.create_release(commit=args.commit, model=args.model)
    if args.json:
        ctx.json(answer)
        return OK
    doc = answer.get("release") or {}
    ctx.print(f"release {doc.get('id', render.NONE)}: {doc.get('status', render.NONE)} "
              f"(model {render.model_label(doc)}, commit {render.short_commit(doc.get('commit'))})")
    return OK


def deploy(args: argparse.Namespace, ctx: Context) -> int:
    if bool(args.release_id) == bool(args.digest):
        raise Usage("deploy takes a RELEASE_ID or --digest sha256:..., exactly one of them")
    if args.digest and not args.digest.startswith("sha256:"):
        raise Usage(f"--digest must look like sha256:<hex>, not {args.digest!r}")
    _forced_needs_reason(args)
    before = _rolled_back(ctx, args.release_id) if _waits(args, ctx) and args.release_id else None
    since = ctx.now()
    answer = ctx.client.deploy(args.environment, release_id=args.release_id, digest=args.digest,
                               reason=args.reason or "", force=args.force)
    return _after(f"deploy to {args.environment}", args.environment, answer, args, ctx, since=since,
                  rolled_back_before=before)


def promote(args: argparse.Namespace, ctx: Context) -> int:
    _forced_needs_reason(args)
    before = _rolled_back(ctx, args.release_id) if _waits(args, ctx) and args.release_id else None
    since = ctx.now()
    to = args.to or _last_environment(ctx)
    answer = ctx.client.promote(to=to, release_id=args.release_id, reason=args.reason or "", force=args.force)
    return _after(f"promote to {to}", to, answer, args, ctx, since=since, rolled_back_before=before)


def approve(args: argparse.Namespace, ctx: Context) -> int:
    since = ctx.now()
    answer = ctx.client.approve(args.environment, args.release_id, reason=args.reason)
    if answer.get("job") is None:
        if args.json:
            ctx.json(answer)
        else:
            ctx.print(f"{args.release_id} approved for {args.environment} of {args.approve_app}; it goes there when "
                      "its rule moves it (the schedule's next slot, or once its soak is over)")
        return OK
    return _after(f"approval of {args.release_id} for {args.environment}", args.environment, answer, args, ctx,
                  since=since)


def override(args: argparse.Namespace, ctx: Context) -> int:
    since = ctx.now()
    answer = ctx.client.override(args.release_id, reason=args.reason)
    if answer.get("job") is None:
        if args.json:
            ctx.json(answer)
        else:
            ctx.print(f"{args.release_id}: the quality gate is overridden; it is green and goes on by its chain's "
                      "rules")
        return OK
    job = answer["job"]
    return _after(f"override of {args.release_id}", job.get("environment", ""), answer, args, ctx, since=since)


def _last_environment(ctx: Context) -> str:
    names = [env.get("name") for env in ctx.client.list_environments()]
    return names[-1] if names else "production"


def rollback(args: argparse.Namespace, ctx: Context) -> int:
    target = None
    if _waits(args, ctx):  # the API answers a rollback with release_id null: the target is `previous`, now
        env = next((e for e in ctx.client.list_environments() if e.get("name") == args.environment), {})
        target = (env.get("previous") or {}).get("release_id")
    since = ctx.now()
    answer = ctx.client.rollback(args.environment, reason=args.reason)
    if not answer.get("release_id") and target:
        answer = {**answer, "release_id": target}
    return _after(f"rollback of {args.environment}", args.environment, answer, args, ctx, since=since)


def hold(args: argparse.Namespace, ctx: Context) -> int:
    doc = ctx.client.hold(args.release_id, reason=args.reason)
    return _show_hold(doc, args, ctx)


def unhold(args: argparse.Namespace, ctx: Context) -> int:
    doc = ctx.client.unhold(args.release_id, reason=args.reason)
    return _show_hold(doc, args, ctx)


def logs(args: argparse.Namespace, ctx: Context) -> int:
    lines = watch.follow_log(ctx.client, release_id=args.release_id, limit=args.limit, interval_s=args.interval,
                             sleep=ctx.sleep, follow=args.follow)
    printed = False
    for line in lines:
        ctx.print(line)
        printed = True
    if not printed:
        print("no history yet", file=ctx.err)
    return OK


# -- helpers --------------------------------------------------------------------------------------------------
def _show_hold(doc: dict[str, Any], args: argparse.Namespace, ctx: Context) -> int:
    if args.json:
        ctx.json(doc)
    else:
        state = "held: automatic paths skip it" if doc.get("held") else "not held"
        ctx.print(f"{doc.get('id', args.release_id)}: {state}")
    return OK


def _forced_needs_reason(args: argparse.Namespace) -> None:
    if args.force and not args.reason:
        raise Usage("--force needs --reason: the ledger records who forced a deploy and why")


def _waits(args: argparse.Namespace, ctx: Context) -> bool:
    if args.wait is not None:
        return args.wait
    return ctx.err.isatty() if ctx.tty is None else ctx.tty


def _rolled_back(ctx: Context, release_id: str) -> bool:
    return bool(ctx.client.get_release(release_id).get("rolled_back"))


def _after(what: str, environment: str, answer: dict[str, Any], args: argparse.Namespace, ctx: Context, *,
           since: datetime, rolled_back_before: bool | None = None) -> int:
    if args.json:
        ctx.json(answer)
    else:
        ctx.print(render.accepted(what, answer))
    release_id = answer.get("release_id")
    if not _waits(args, ctx) or not release_id:
        return OK
    with ctx.progress() as progress:
        outcome = watch.rollout(ctx.client, environment, release_id, since=since, progress=progress,
                                timeout_s=args.timeout, rolled_back_before=rolled_back_before,
                                interval_s=args.interval, sleep=ctx.sleep, clock=ctx.clock)
    if outcome.state == "done":
        print(outcome.message, file=ctx.err)
        return OK
    print(f"shipbot: {outcome.message}", file=ctx.err)
    return TIMED_OUT if outcome.state == "timeout" else FAILED


# -- the fleet ----------------------------------------------------------------------------------------------------
def apply(args: argparse.Namespace, ctx: Context) -> int:
    """Applies a fleet file, validated whole by the API: every problem is printed, and nothing is applied."""
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise Usage(f"cannot read {args.file}: {e}") from None
    try:
        doc = ctx.client.apply_fleet(text, reason=args.reason or "")
    except ApiError as e:
        if not e.problems:
            raise
        print(f"shipbot: {args.file} was not applied, {len(e.problems)} problem{'s' * (len(e.problems) != 1)}:",
              file=ctx.err)
        for problem in e.problems:
            print(f"  {args.file}: {problem}", file=ctx.err)
        return 1
    if args.json:
        ctx.json(doc)
    else:
        ctx.print(f"applied fleet version {doc['version']} ({', '.join(doc['apps'])}) as {doc['applied_by']}")
    return 0


def config(args: argparse.Namespace, ctx: Context) -> int:
    """The fleet in force (or --version N), as YAML; --history lists every version applied."""
    if args.history:
        versions = ctx.client.fleet_history()
        if args.json:
            ctx.json(versions)
            return 0
        if not versions:
            ctx.print("no fleet file applied: the app settings describe one application (`shipbot config`)")
        for v in versions:
            ctx.print(f"{v['version']:>4}  {v['applied_at'][:19].replace('T', ' ')}  {v['applied_by']:<24} {v['reason']}")
        return 0
    doc = ctx.client.get_fleet(version=args.version)
    if args.json:
        ctx.json(doc)
        return 0
    origin = (f"version {doc['version']}, applied by {doc['applied_by']} at {doc['applied_at'][:19].replace('T', ' ')}"
              if doc["version"] else doc["reason"])
    ctx.print(f"# {origin}" + (f": {doc['reason']}" if doc["version"] and doc["reason"] else ""))
    ctx.print(doc["text"].rstrip("\n"))
    return 0


def history(args: argparse.Namespace, ctx: Context) -> int:
    """An environment's whole history, oldest first (what its document archived included); --limit: the last N."""
    entries = ctx.client.environment_history(args.environment)
    entries = entries[-args.limit:] if args.limit else entries
    if args.json:
        ctx.json(entries)
        return 0
    for entry in entries:
        ctx.print(f"{entry['at'][:19].replace('T', ' ')}  {entry['what']:<24} {entry['by']:<16} {entry['detail']}")
    return 0
