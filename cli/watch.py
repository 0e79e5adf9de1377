"""Watching the API: `--wait` for a rollout, and `logs --follow`.

The API answers a deploy, promote or rollback with 202 and the release id; the rollout goes on in the
background. `rollout` polls GET /api/environments until the environment runs that release (its ledger's
`current` names the release and, where the API reports it, `running` is that ref), or until the release
records a failure: its status turns `failed`, it is marked rolled back, or a new history entry says it failed.
Each new history entry of the release is shown as it appears. Polls happen every `interval_s` until a
deadline; `sleep` and `clock` are injected so tests run instantly.

Both poll loops tolerate a 5xx or a moment without answer (a host restarting) until their deadline, and stop
at once on any other error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cli import render
from cli.client import ApiError, Client, Unreachable
from cli.progress import Progress

SKEW = timedelta(seconds=5)  # history entries this much older than our request may still be its own


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # "done" | "failed" | "timeout"
    message: str


def rollout(client: Client, environment: str, release_id: str, *, since: datetime, progress: Progress,
            timeout_s: float, rolled_back_before: bool | None = None, interval_s: float = 1.0,
            sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> Outcome:
    """Waits until `environment` runs `release_id`, or the release records a failure after `since`.

    `rolled_back_before`: the release's `rolled_back` flag before the request, when the caller read it; else
    the first poll's value is the baseline (a flag set before that poll is then only caught by its entry).
    """
    deadline = clock() + timeout_s
    seen: set[tuple[str, str, str]] = set()
    was_rolled_back = rolled_back_before
    while True:
        try:
            release = client.get_release(release_id)
            env = next((e for e in client.list_environments() if e.get("name") == environment), None)
        except (ApiError, Unreachable) as e:
            if isinstance(e, ApiError) and e.status < 500:
                raise
            progress.update(f"waiting for the API ({e})")
        else:
            for entry in _new_entries(release, since, seen):
                progress.note(render.log_line(release_id, entry))
            if env is None:
                return Outcome("failed", f"the API knows no environment {environment!r}")
            if _runs(env, release_id):
                ref = render.short_ref(env["current"].get("ref"))
                return Outcome("done", f"{environment} runs {release_id} ({ref})")
            failure = _failure(release, env, since, was_rolled_back)
            if failure:
                return Outcome("failed", failure)
            was_rolled_back = bool(release.get("rolled_back")) if was_rolled_back is None else was_rolled_back
            progress.update(_state(environment, release_id, env, release))
        if clock() >= deadline:
            return Outcome("timeout", f"{environment} does not run {release_id} after {timeout_s:.0f}s; "
                                      "the rollout may still finish: see `shipbot status`")
        sleep(interval_s)


def follow_log(client: Client, *, release_id: str | None, limit: int, interval_s: float,
               sleep: Callable[[float], None] = time.sleep, follow: bool = True) -> Iterator[str]:
    """Lines of the ledger's history in time order; with `follow`, new ones as they appear, until interrupted."""
    seen: set[tuple[str, str, str, str, str]] = set()
    while True:
        try:
            docs = [client.get_release(release_id)] if release_id else client.list_releases(limit=limit)
        except (ApiError, Unreachable) as e:
            if not follow or (isinstance(e, ApiError) and e.status < 500):
                raise
            docs = []
        lines: list[tuple[float, str, dict[str, Any]]] = []
        for doc in docs:
            rid = doc.get("id", render.NONE)
            for entry in doc.get("history") or ():
                key = (rid, str(entry.get("at")), str(entry.get("what")), str(entry.get("by")),
                       str(entry.get("detail")))
                if key not in seen:
                    seen.add(key)
                    when = render.parse_time(entry.get("at"))
                    lines.append((when.timestamp() if when else float("-inf"), rid, entry))
        lines.sort(key=lambda item: (item[0], item[1]))
        for _, rid, entry in lines:
            yield render.log_line(rid, entry)
        if not follow:
            return
        sleep(interval_s)


def _runs(env: dict[str, Any], release_id: str) -> bool:
    current = env.get("current") or {}
    if current.get("release_id") != release_id:
        return False
    return "running" not in env or env.get("running") == current.get("ref")


def _new_entries(release: dict[str, Any], since: datetime, seen: set[tuple[str, str, str]]) -> list[dict[str, Any]]:
    fresh = []
    for entry in release.get("history") or ():
        when = render.parse_time(entry.get("at"))
        key = (str(entry.get("at")), str(entry.get("what")), str(entry.get("detail")))
        if when is not None and when >= since - SKEW and key not in seen:
            seen.add(key)
            fresh.append(entry)
    return fresh


def _failure(release: dict[str, Any], env: dict[str, Any], since: datetime,
             was_rolled_back: bool | None) -> str | None:
    if release.get("status") == "failed":
        return f"{release.get('id')} failed: {release.get('reason') or 'no reason recorded'}"
    if was_rolled_back is False and release.get("rolled_back"):
        return f"{release.get('id')} was rolled back: {release.get('reason') or _last_detail(release)}"
    # The engine's words for a rollout that will not happen: "rollout to staging failed", "deploy to
    # production refused" (on the release), "rollback failed" (on the environment, when the API sends its history).
    for where, doc in ((release.get("id"), release), (env.get("name"), env)):
        for entry in reversed(doc.get("history") or ()):
            when = render.parse_time(entry.get("at"))
            if when is None or when < since - SKEW:
                break
            what = str(entry.get("what", ""))
            if "fail" in what.lower() or "refused" in what.lower():
                return f"{where}: {what}: {entry.get('detail') or release.get('reason') or ''}".rstrip(": ")
    return None


def _last_detail(release: dict[str, Any]) -> str:
    history = release.get("history") or ()
    return str(history[-1].get("detail") or history[-1].get("what")) if history else "no reason recorded"


def _state(environment: str, release_id: str, env: dict[str, Any], release: dict[str, Any]) -> str:
    current = (env.get("current") or {}).get("release_id") or "nothing"
    return f"{environment}: {current} -> {release_id} ({release.get('status', '?')})"
