"""What the CLI prints: the API's JSON documents as aligned plain-text tables and detail views.

Pure. No I/O: every function takes the documents (dicts as the API sends them: ReleaseDoc, the environments
list) and returns text; `now` is passed in so ages are testable. Unknown or missing fields print as "-",
so a newer API never breaks an older CLI. Times print in UTC, ISO 8601, to the second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

NONE = "-"
REASON_WIDTH = 60  # in tables; `shipbot release ID` prints the whole reason


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart; the last column is not padded."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(str(h)), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def timestamp(value: Any) -> str:
    parsed = parse_time(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if parsed else NONE


def age(value: Any, *, now: datetime) -> str:
    """How long ago: `42s`, `5m`, `3h`, `2d`."""
    parsed = parse_time(value)
    if parsed is None:
        return NONE
    seconds = max(0, int((now - parsed).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def short_commit(sha: Any) -> str:
    return sha[:7] if isinstance(sha, str) and sha else NONE


def short_ref(ref: Any) -> str:
    """`repo@sha256:0123456789ab…` keeps the digest recognisable in a table."""
    if not isinstance(ref, str) or not ref:
        return NONE
    name, _, digest = ref.rpartition("@")
    return f"{name}@{digest[:19]}" if name else ref


def model_label(release: dict[str, Any] | None) -> str:
    model = (release or {}).get("model") or {}
    if not model.get("name"):
        return NONE
    return f"{model['name']}/{model.get('version', NONE)}"


def flags(release: dict[str, Any]) -> str:
    marks = [name for name, key in (("held", "held"), ("rolled-back", "rolled_back")) if release.get(key)]
    return ",".join(marks) or NONE


def clip(text: Any, width: int = REASON_WIDTH) -> str:
    text = " ".join(str(text or "").split())
    if not text:
        return NONE
    return text if len(text) <= width else text[: width - 1] + "…"


# -- views ----------------------------------------------------------------------------------------------------
def environments_table(environments: Sequence[dict[str, Any]], releases: dict[str, dict[str, Any]], *,
                       now: datetime) -> str:
    """One row per environment; `releases` maps release ids to their documents (model and commit columns)."""
    rows = []
    for env in environments:
        current = env.get("current") or {}
        release = releases.get(current.get("release_id", ""))
        rows.append([env.get("name", NONE), current.get("release_id") or NONE, model_label(release),
                     short_commit((release or {}).get("commit")), age(current.get("at"), now=now),
                     current.get("by") or NONE, env.get("url") or NONE])
    return table(["ENVIRONMENT", "RELEASE", "MODEL", "COMMIT", "SINCE", "BY", "URL"], rows)


def drift_notes(environments: Sequence[dict[str, Any]]) -> list[str]:
    """Where what runs is not what the ledger says (a failed rollout, a container someone removed), and an
    environment whose automatic rollouts are blocked."""
    notes = []
    for env in environments:
        if env.get("blocked"):
            notes.append(f"note: automatic rollouts to {env.get('name')} are blocked: {clip(env['blocked'])}; "
                         "a manual deploy that succeeds clears it")
        if "running" not in env:
            continue
        current, running = env.get("current") or {}, env.get("running")
        expected = current.get("ref")
        if expected and running != expected:
            runs = f"runs {short_ref(running)}" if running else "runs nothing"
            notes.append(f"note: {env.get('name')} {runs}, but its ledger says {current.get('release_id')} "
                         f"({short_ref(expected)})")
        elif running and not expected:
            notes.append(f"note: {env.get('name')} runs {short_ref(running)}, which its ledger does not record")
    return notes


def releases_table(releases: Sequence[dict[str, Any]], *, now: datetime) -> str:
    rows = [[r.get("id", NONE), r.get("status", NONE), model_label(r), short_commit(r.get("commit")),
             age(r.get("created"), now=now), r.get("trigger") or NONE, flags(r), clip(r.get("reason"))]
            for r in releases]
    return table(["RELEASE", "STATUS", "MODEL", "COMMIT", "CREATED", "TRIGGER", "FLAGS", "REASON"], rows)


def status_view(environments: Sequence[dict[str, Any]], releases: Sequence[dict[str, Any]], *,
                known: dict[str, dict[str, Any]] | None = None, now: datetime) -> str:
    """`shipbot status`: the environments, any drift, then the most recent releases."""
    by_id = {r.get("id"): r for r in releases} | (known or {})
    parts = [environments_table(environments, by_id, now=now), *drift_notes(environments), ""]
    parts.append(releases_table(releases, now=now) if releases else "no releases yet")
    return "\n".join(parts)


def fleet_view(apps: Sequence[dict[str, Any]], *, now: datetime) -> str:
    """`shipbot status` of a fleet: one row per environment of every application, in chain order."""
    rows, notes = [], []
    for app in apps:
        for env in app.get("environments") or ():
            current = env.get("current") or {}
            rows.append([app.get("name", NONE), env.get("name", NONE), env.get("rule") or NONE,
                         current.get("release_id") or NONE, age(current.get("at"), now=now),
                         current.get("by") or NONE, env.get("url") or NONE])
        notes += [f"{app.get('name')}: {note}" for note in drift_notes(app.get("environments") or ())]
        notes += [f"{app.get('name')}: {env.get('name')} waits: {clip(env['waiting'])}"
                  for env in app.get("environments") or () if env.get("waiting")]
    return "\n".join([table(["APP", "ENVIRONMENT", "RULE", "RELEASE", "SINCE", "BY", "URL"], rows), *notes])


def release_view(release: dict[str, Any], *, now: datetime) -> str:
    """`shipbot release ID`: every field an operator acts on, then the history."""
    model = release.get("model") or {}
    fields = [
        ("id", release.get("id")),
        ("status", release.get("status")),
        ("created", f"{timestamp(release.get('created'))} ({age(release.get('created'), now=now)})"),
        ("trigger", release.get("trigger")),
        ("commit", release.get("commit")),
        ("model", model_label(release) if model else None),
        ("model sha256", model.get("sha256")),
        ("model blob", model.get("blob_name")),
        ("image", _image(release)),
        ("build", release.get("build_id") and f"{release['build_id']} (attempts: {release.get('build_attempts', 0)})"),
        ("deployed", ", ".join(release.get("deployed") or ()) or None),
        ("approved", ", ".join(release.get("approved") or ()) or None),
        ("flags", flags(release) if flags(release) != NONE else None),
        ("reason", release.get("reason")),
        *gate_fields(release.get("evaluation")),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {value}" for name, value in fields if value not in (None, "")]
    history = release.get("history") or []
    lines.append("")
    lines.append(history_table([(release.get("id", NONE), e) for e in history], with_release=False)
                 if history else "no history")
    return "\n".join(lines)


def gate_fields(figures: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The quality gate's lines of `shipbot release ID`: the candidate's figure, production's, the verdict."""
    if not figures:
        return []
    def shown(value: Any) -> str:
        return f"{value:.6g}" if isinstance(value, (int, float)) else "not scored"

    baseline = (f"{shown(figures['baseline'])} ({figures.get('baseline_release')})"
                if figures.get("baseline") is not None else "none comparable in production")
    verdict = "passed" if figures.get("passed") else "failed"
    if figures.get("overridden_by"):
        verdict += f", overridden by {figures['overridden_by']}: {figures.get('override_reason', '')}"
    return [("gate", f"{figures.get('metric')} {shown(figures.get('value'))} on {figures.get('rows')} rows of "
                     f"{figures.get('data')} ({figures.get('seconds', 0):.1f} s)"),
            ("production", baseline), ("gate verdict", f"{verdict}: {figures.get('reason')}")]


def history_table(entries: Sequence[tuple[str, dict[str, Any]]], *, with_release: bool = True) -> str:
    headers = ["TIME", *(["RELEASE"] if with_release else []), "WHAT", "BY", "DETAIL"]
    rows = [[timestamp(e.get("at")), *([rid] if with_release else []), e.get("what") or NONE,
             e.get("by") or NONE, " ".join(str(e.get("detail") or "").split())] for rid, e in entries]
    return table(headers, rows)


def log_line(release_id: str, entry: dict[str, Any]) -> str:
    """One history entry as one line: time, release, what, by, detail (tab-free, for grep and tail)."""
    detail = " ".join(str(entry.get("detail") or "").split())
    return "  ".join(filter(None, [timestamp(entry.get("at")), release_id, entry.get("what") or NONE,
                                   entry.get("by") or NONE, detail]))


def accepted(verb: str, answer: dict[str, Any]) -> str:
    """The one line after a 202: what was asked, which release, the job's id when the API gives one."""
    job = answer.get("job") or {}
    job_id = job.get("id") or job.get("job_id") if isinstance(job, dict) else None
    suffix = f" (job {job_id})" if job_id else ""
    return f"{verb}: {answer.get('release_id', NONE)} accepted{suffix}"


def _image(release: dict[str, Any]) -> str | None:
    repository, digest, tag = release.get("repository"), release.get("digest"), release.get("tag")
    if repository and digest:
        return f"{repository}@{digest}"
    if repository and tag:
        return f"{repository}:{tag} (not pushed yet)"
    return None
