"""The `shipbot` CLI's API verbs: arguments, what goes on the wire, what it prints, exit codes.

The API is faked at our own boundary with httpx.MockTransport (a small in-memory ShipBot API that speaks the
documented contract); connection failures are real (a closed local port). The engine author's end-to-end CLI
tests run the same verbs against the real local host.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli import render
from cli.main import main
from cli.progress import Progress

NOW = datetime.now(UTC).replace(microsecond=0)
REPO = "127.0.0.1:5000/shipbot/app"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def release_doc(rid: str, *, minutes_ago: int, digest: str | None, version: str = "3", **extra: Any) -> dict:
    created = NOW - timedelta(minutes=minutes_ago)
    doc = {"id": rid, "created": iso(created), "trigger": "model_uploaded", "repository": REPO, "tag": rid,
           "status": "green", "commit": "0123456789abcdef0123456789abcdef01234567",
           "model": {"name": "diabetes", "version": version, "sha256": "c" * 64,
                     "blob_name": f"diabetes/{version}/model.joblib", "uploaded": iso(created)},
           "recipe": "model_api:1", "digest": digest, "build_id": "b-1", "build_attempts": 1, "reason": "",
           "held": False, "rolled_back": False, "deployed": [],
           "history": [{"at": iso(created), "what": "planned", "by": "shipbot", "detail": "model_uploaded"}]}
    doc.update(extra)
    return doc


def deployment(rid: str, digest: str, *, minutes_ago: int) -> dict:
    return {"release_id": rid, "ref": f"{REPO}@{digest}", "at": iso(NOW - timedelta(minutes=minutes_ago)),
            "by": "shipbot"}


class FakeApi:
    """The documented API over in-memory documents; `on_poll` lets a test move the world between polls."""

    def __init__(self) -> None:
        self.releases = {
            "r-new": release_doc("r-new", minutes_ago=5, digest=DIGEST_B, version="4"),
            "r-old": release_doc("r-old", minutes_ago=90, digest=DIGEST_A, deployed=["staging"]),
        }
        self.environments = [
            {"name": "staging", "url": "http://127.0.0.1:8081",
             "current": deployment("r-old", DIGEST_A, minutes_ago=80), "previous": None,
             "running": f"{REPO}@{DIGEST_A}"},
            {"name": "production", "url": "http://127.0.0.1:8080", "current": None, "previous": None,
             "running": None},
        ]
        self.apps: list[dict] | None = None  # None: one application, these environments
        self.requests: list[httpx.Request] = []
        self.on_poll: Callable[[int], None] = lambda polls: None
        self.polls = 0

    def env(self, name: str) -> dict:
        return next(e for e in self.environments if e["name"] == name)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        method, parts = request.method, request.url.path.strip("/").split("/")
        body = json.loads(request.content) if request.content else {}
        if parts == ["api", "apps"]:
            return httpx.Response(200, json={"apps": self.apps or [{"name": "app", "environments": self.environments}]})
        if parts[:2] != ["api", "releases"] and parts[:2] != ["api", "environments"]:
            return error(404, "not_found", "no such route")
        if parts == ["api", "releases"] and method == "GET":
            docs = sorted(self.releases.values(), key=lambda r: r["created"], reverse=True)
            return httpx.Response(200, json={"releases": docs[: int(request.url.params.get("limit", 20))]})
        if parts == ["api", "releases"] and method == "POST":
            return httpx.Response(202, json={"release": self.releases["r-new"]})
        if parts[:2] == ["api", "releases"] and len(parts) >= 3:
            doc = self.releases.get(parts[2])
            if doc is None:
                return error(404, "not_found", f"no release {parts[2]}")
            if parts[3:] == ["hold"]:
                doc["held"] = method == "POST"
            if parts[3:] == ["override"]:
                doc.update(status="green", evaluation={**doc["evaluation"], "overridden_by": "ops@test",
                                                       "override_reason": body["reason"]})
                return httpx.Response(200, json={"release": doc, "job": None})
            return httpx.Response(200, json=doc)
        if parts == ["api", "environments"]:
            self.polls += 1
            self.on_poll(self.polls)
            return httpx.Response(200, json={"environments": self.environments})
        env, action = parts[2], parts[3]
        if env not in ("staging", "production"):
            return error(404, "not_found", f"no environment {env}")
        rid = body.get("release_id") or ("r-new" if action == "promote" else None)  # rollback: null
        if body.get("digest"):
            rid = next((r["id"] for r in self.releases.values() if r["digest"] == body["digest"]), None)
            if rid is None:
                return error(404, "not_found", f"no release has the image {body['digest']}")
        return httpx.Response(202, json={"job": {"kind": action, "release_id": rid}, "release_id": rid})


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def api() -> FakeApi:
    global NOW  # ages are relative to now: a suite that ran for minutes before this test must not shift them
    NOW = datetime.now(UTC).replace(microsecond=0)
    return FakeApi()


@pytest.fixture
def shipbot(api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Callable[..., Run]:
    """shipbot("status", "--json", env={...}) -> Run(code, stdout, stderr), against the fake API."""

    def run(*argv: str, env: dict[str, str] | None = None, transport: httpx.BaseTransport | None = None,
            clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None) -> Run:
        environ = {"SHIPBOT_API_KEY": "the-key", "SHIPBOT_ACTOR": "alice@laptop", "SHIPBOT_STATE": str(tmp_path)}
        environ.update(env or {})
        extra = {k: v for k, v in (("clock", clock), ("sleep", sleep)) if v is not None}
        code = main(list(argv), environ=environ, transport=transport or httpx.MockTransport(api), tty=False,
                    **{"sleep": lambda s: None, **extra})
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


# -- reading ------------------------------------------------------------------------------------------------
def test_status_shows_what_each_environment_runs_and_the_recent_releases(shipbot, api):
    run = shipbot("status")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    header = lines[0]
    staging = next(line for line in lines if line.startswith("staging"))
    for name, value in (("RELEASE", "r-old"), ("MODEL", "diabetes/3"), ("COMMIT", "0123456"),
                        ("SINCE", "1h ago"), ("URL", "http://127.0.0.1:8081")):
        assert staging[header.index(name):].startswith(value), (name, staging)
    production = next(line for line in lines if line.startswith("production"))
    assert production[header.index("RELEASE"):].startswith("-")
    releases_header = next(line for line in lines if line.startswith("RELEASE "))
    newest = lines[lines.index(releases_header) + 1]
    assert newest[releases_header.index("MODEL"):].startswith("diabetes/4")
    assert newest[releases_header.index("CREATED"):].startswith("5m ago")
    assert "note:" not in run.out


def test_status_notes_an_environment_that_does_not_run_what_its_ledger_says(shipbot, api):
    api.env("staging")["running"] = None
    run = shipbot("status")
    assert run.code == 0
    assert "note: staging runs nothing, but its ledger says r-old" in run.out


def test_status_notes_an_environment_whose_automatic_rollouts_are_blocked(shipbot, api):
    api.env("production")["blocked"] = "r-new: patch Deployment production/app: 403 forbidden"
    run = shipbot("status")
    assert run.code == 0
    assert "note: automatic rollouts to production are blocked: r-new: patch Deployment production/app: 403" in run.out


def test_status_json_prints_the_api_documents_unchanged(shipbot, api):
    run = shipbot("status", "--json", "--limit", "1")
    assert run.code == 0
    doc = json.loads(run.out)
    assert doc["environments"] == api.environments
    assert [r["id"] for r in doc["releases"]] == ["r-new"]
    assert api.requests[-1].url.params["limit"] == "1"


def test_status_looks_up_a_running_release_older_than_the_listed_ones(shipbot, api):
    run = shipbot("status", "--limit", "1")
    assert run.code == 0
    assert any(r.url.path == "/api/releases/r-old" for r in api.requests)
    staging = next(line for line in run.out.splitlines() if line.startswith("staging"))
    assert "diabetes/3" in staging


def test_release_shows_its_fields_and_history(shipbot, api):
    api.releases["r-old"]["history"].append(
        {"at": iso(NOW), "what": "deployed to staging", "by": "alice@laptop", "detail": "by alice; 3.2 s"})
    run = shipbot("release", "r-old")
    assert run.code == 0
    assert f"image         {REPO}@{DIGEST_A}" in run.out
    assert "model sha256  " + "c" * 64 in run.out
    last = run.out.splitlines()[-1]
    assert last.startswith(iso(NOW)) and "deployed to staging" in last and "alice@laptop" in last


def test_releases_lists_newest_first(shipbot):
    run = shipbot("releases")
    assert run.code == 0
    ids = [line.split()[0] for line in run.out.splitlines()[1:]]
    assert ids == ["r-new", "r-old"]


def test_logs_merges_the_history_of_recent_releases_in_time_order(shipbot, api):
    api.releases["r-old"]["history"].append(
        {"at": iso(NOW - timedelta(minutes=1)), "what": "deployed to staging", "by": "bob@ci", "detail": "x"})
    run = shipbot("logs")
    assert run.code == 0
    lines = run.out.splitlines()
    assert [line.split()[1:3] for line in lines] == [["r-old", "planned"], ["r-new", "planned"],
                                                     ["r-old", "deployed"]]
    assert lines[-1].endswith("bob@ci  x")


def test_logs_follow_prints_new_lines_as_they_appear(shipbot, api):
    rounds = []

    def sleep(seconds: float) -> None:
        rounds.append(seconds)
        if len(rounds) == 1:
            api.releases["r-new"]["history"].append(
                {"at": iso(NOW), "what": "smoke test passed", "by": "shipbot", "detail": "1.1 s"})
        else:
            raise KeyboardInterrupt

    run = shipbot("logs", "r-new", "--follow", "--interval", "0.5", sleep=sleep)
    assert run.code == 130
    assert [line.split("  ")[2] for line in run.out.splitlines()] == ["planned", "smoke test passed"]
    assert rounds == [0.5, 0.5]


# -- asking -------------------------------------------------------------------------------------------------
def test_every_request_carries_the_function_key_and_who_asks(shipbot, api):
    assert shipbot("releases").code == 0
    request = api.requests[-1]
    assert request.headers["x-functions-key"] == "the-key"
    assert request.headers["x-shipbot-actor"] == "alice@laptop"


def test_without_an_api_key_the_local_hosts_default_function_key_is_used(shipbot, api, tmp_path):
    (tmp_path / "host-keys.json").write_text(json.dumps({"master": "m", "functionKeys": {"default": "local-key"}}))
    assert shipbot("releases", env={"SHIPBOT_API_KEY": ""}).code == 0
    assert api.requests[-1].headers["x-functions-key"] == "local-key"


def test_the_local_hosts_key_is_never_sent_to_a_remote_api(shipbot, api, tmp_path):
    (tmp_path / "host-keys.json").write_text(json.dumps({"master": "m", "functionKeys": {"default": "local-key"}}))
    run = shipbot("releases", env={"SHIPBOT_API_KEY": "", "SHIPBOT_API_URL": "https://shipbot.example.net"})
    assert run.code == 0
    assert api.requests[-1].url.host == "shipbot.example.net"
    assert "x-functions-key" not in api.requests[-1].headers


def test_build_posts_the_commit_and_model(shipbot, api):
    run = shipbot("build", "--commit", "abc1234", "--model", "diabetes/4")
    assert run.code == 0
    assert json.loads(api.requests[-1].content) == {"commit": "abc1234", "model": "diabetes/4"}
    assert run.out.startswith("release r-new: green (model diabetes/4")


def test_deploy_sends_the_release_the_reason_and_force(shipbot, api):
    run = shipbot("deploy", "production", "r-old", "--reason", "hotfix", "--force", "--no-wait")
    assert run.code == 0, run.err
    request = api.requests[-1]
    assert (request.method, request.url.path) == ("POST", "/api/environments/production/deploy")
    assert json.loads(request.content) == {"release_id": "r-old", "reason": "hotfix", "force": True}
    assert run.out.strip() == "deploy to production: r-old accepted"


def test_deploy_by_digest_sends_the_digest(shipbot, api):
    run = shipbot("deploy", "staging", "--digest", DIGEST_B, "--no-wait", "--json")
    assert run.code == 0
    assert json.loads(api.requests[-1].content) == {"digest": DIGEST_B, "reason": "", "force": False}
    assert json.loads(run.out)["release_id"] == "r-new"


@pytest.mark.parametrize("argv", [
    ["deploy", "staging"],                                     # neither a release nor a digest
    ["deploy", "staging", "r-old", "--digest", DIGEST_A],      # both
    ["deploy", "staging", "--digest", "latest"],               # not a digest
    ["deploy", "staging", "r-old", "--force"],                 # forced without a reason
    ["promote", "--force"],
    ["rollback", "staging"],                                   # a rollback says why
    ["hold", "r-old"],
    ["release", "r-old/hold"],                                 # an id is one path segment
    ["logs", "--interval", "0"],
    ["bogus"],
])
def test_arguments_that_make_no_sense_exit_2_without_asking_the_api(shipbot, api, argv):
    run = shipbot(*argv)
    assert run.code == 2
    assert run.err
    assert api.requests == []


def test_promote_without_a_release_lets_the_api_choose(shipbot, api):
    run = shipbot("promote", "--no-wait")
    assert run.code == 0
    assert json.loads(api.requests[-1].content) == {"reason": "", "force": False}
    assert "r-new accepted" in run.out


def test_hold_and_unhold(shipbot, api):
    run = shipbot("hold", "r-new", "--reason", "bad numbers")
    assert run.code == 0
    assert (api.requests[-1].method, json.loads(api.requests[-1].content)) == ("POST", {"reason": "bad numbers"})
    assert run.out.strip() == "r-new: held: automatic paths skip it"
    run = shipbot("unhold", "r-new", "--reason", "numbers fixed")
    assert run.code == 0
    assert (api.requests[-1].method, api.requests[-1].url.path) == ("DELETE", "/api/releases/r-new/hold")
    assert json.loads(api.requests[-1].content) == {"reason": "numbers fixed"}
    assert run.out.strip() == "r-new: not held"


GATE = {"metric": "rmse", "value": 61.25, "data": "eval/test.csv", "data_sha256": "ab" * 32, "rows": 89,
        "passed": False, "reason": "rmse 61.25 against production's (r-old) 53.9: worse by 7.35", "baseline": 53.9,
        "baseline_release": "r-old", "seconds": 0.4, "overridden_by": "", "override_reason": ""}


def test_release_shows_the_quality_gates_figures(shipbot, api):
    api.releases["r-new"].update(status="failed", evaluation=GATE)

    run = shipbot("release", "r-new")

    assert run.code == 0
    lines = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in run.out.splitlines() if "  " in line}
    assert lines["gate"] == "rmse 61.25 on 89 rows of eval/test.csv (0.4 s)"
    assert lines["production"] == "53.9 (r-old)"
    assert lines["gate verdict"].startswith("failed: rmse 61.25 against production's")


def test_override_sends_the_reason_and_says_what_follows(shipbot, api):
    api.releases["r-new"].update(status="failed", evaluation=GATE)

    run = shipbot("override", "r-new", "--reason", "checked by hand", "--no-wait")

    assert run.code == 0
    assert (api.requests[-1].method, api.requests[-1].url.path) == ("POST", "/api/releases/r-new/override")
    assert json.loads(api.requests[-1].content) == {"reason": "checked by hand"}
    assert "the quality gate is overridden" in run.out
    assert shipbot("override", "r-new").code != 0  # --reason is required


# -- waiting ------------------------------------------------------------------------------------------------
def test_deploy_wait_returns_once_the_environment_runs_the_release(shipbot, api):
    def world(polls: int) -> None:
        if polls == 2:
            api.releases["r-new"]["history"].append(
                {"at": iso(datetime.now(UTC)), "what": "deployed to staging", "by": "alice@laptop", "detail": ""})
            api.env("staging")["current"] = deployment("r-new", DIGEST_B, minutes_ago=0)
        if polls == 3:
            api.env("staging")["running"] = f"{REPO}@{DIGEST_B}"

    api.on_poll = world
    run = shipbot("deploy", "staging", "r-new", "--reason", "try it", "--wait")
    assert run.code == 0, run.err
    assert api.polls == 3  # the ledger says r-new at poll 2, the container runs it at poll 3
    assert "r-new  deployed to staging  alice@laptop" in run.err
    assert run.err.splitlines()[-1] == f"staging runs r-new ({REPO}@{DIGEST_B[:19]})"


def test_deploy_wait_fails_when_the_release_records_a_failed_rollout(shipbot, api):
    def world(polls: int) -> None:
        if polls == 2:
            api.releases["r-new"].update(rolled_back=True, reason="rollout to staging failed verification: 503")
            api.releases["r-new"]["history"].append(
                {"at": iso(datetime.now(UTC)), "what": "rollout to staging failed", "by": "alice@laptop",
                 "detail": "503; staging runs r-old again"})

    api.on_poll = world
    run = shipbot("deploy", "staging", "r-new", "--reason", "try it", "--wait")
    assert run.code == 1
    assert "shipbot: r-new was rolled back: rollout to staging failed verification: 503" in run.err


def test_rollback_wait_follows_the_environment_back_to_its_previous_release(shipbot, api):
    api.env("staging").update(current=deployment("r-new", DIGEST_B, minutes_ago=1),
                              previous=deployment("r-old", DIGEST_A, minutes_ago=80), running=f"{REPO}@{DIGEST_B}")

    def world(polls: int) -> None:
        if polls == 3:  # poll 1 reads `previous` before the request
            api.env("staging").update(current=deployment("r-old", DIGEST_A, minutes_ago=0), previous=None,
                                      running=f"{REPO}@{DIGEST_A}")

    api.on_poll = world
    run = shipbot("rollback", "staging", "--reason", "p95 doubled", "--wait")
    assert run.code == 0, run.err
    assert json.loads(next(r for r in api.requests if r.method == "POST").content) == {"reason": "p95 doubled"}
    assert run.out.strip() == "rollback of staging: r-old accepted"
    assert run.err.splitlines()[-1].startswith("staging runs r-old")


def test_rollback_wait_fails_when_the_environment_records_a_failed_rollback(shipbot, api):
    api.env("staging").update(previous=deployment("r-new", DIGEST_B, minutes_ago=80))

    def world(polls: int) -> None:
        api.env("staging")["history"] = [{"at": iso(datetime.now(UTC)), "what": "rollback failed",
                                          "by": "alice@laptop", "detail": "to r-new: not ready in 60 s"}]

    api.on_poll = world
    run = shipbot("rollback", "staging", "--reason", "r", "--wait")
    assert run.code == 1
    assert "shipbot: staging: rollback failed: to r-new: not ready in 60 s" in run.err


def test_deploy_wait_gives_up_at_its_timeout_with_exit_3(shipbot, api):
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    run = shipbot("deploy", "staging", "r-new", "--reason", "r", "--wait", "--timeout", "10",
                  clock=lambda: now[0], sleep=sleep)
    assert run.code == 3
    assert "staging does not run r-new after 10s" in run.err
    assert 10 <= now[0] <= 11 and api.polls == 11


def test_wait_rides_out_a_moment_of_503(shipbot, api):
    api_call = api.__call__
    failures = iter([True, False, False])

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/environments" and next(failures, False):
            return error(503, "unavailable", "host restarting")
        return api_call(request)

    api.env("staging")["current"] = deployment("r-new", DIGEST_B, minutes_ago=0)
    api.env("staging")["running"] = f"{REPO}@{DIGEST_B}"
    run = shipbot("deploy", "staging", "r-new", "--reason", "r", "--wait", transport=httpx.MockTransport(flaky))
    assert run.code == 0, run.err
    assert "waiting for the API (host restarting)" in run.err


# -- failing ------------------------------------------------------------------------------------------------
def test_an_api_error_prints_its_message_and_exits_1(shipbot):
    run = shipbot("release", "r-missing")
    assert (run.code, run.err.strip()) == (1, "shipbot: no release r-missing")
    assert run.out == ""


def test_an_error_without_json_still_says_the_status(shipbot):
    run = shipbot("releases", transport=httpx.MockTransport(lambda r: httpx.Response(502, text="<html>")))
    assert (run.code, run.err.strip()) == (1, "shipbot: HTTP 502 Bad Gateway")


def test_a_rejected_key_says_which_setting_to_check_and_never_prints_the_key(shipbot):
    reject = httpx.MockTransport(lambda r: httpx.Response(401, text=""))
    run = shipbot("releases", transport=reject)
    assert run.code == 1
    assert "SHIPBOT_API_KEY" in run.err and "the-key" not in run.err


def test_connection_refused_hints_at_shipbot_up(shipbot):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = shipbot("status", env={"SHIPBOT_API_URL": f"http://127.0.0.1:{port}"},
                  transport=httpx.HTTPTransport())
    assert run.code == 1
    assert "connection refused" in run.err and "run `shipbot up`" in run.err.lower()


# -- rendering and progress -------------------------------------------------------------------------------------
def test_tables_pad_each_column_to_its_widest_cell():
    text = render.table(["A", "LONGER"], [["xxxx", "1"], ["y", "22"]])
    assert text.splitlines() == ["A     LONGER", "xxxx  1", "y     22"]
    assert render.table(["A", "B"], []) == "A  B"


@pytest.mark.parametrize(("delta", "text"), [(timedelta(seconds=4), "4s ago"), (timedelta(minutes=3), "3m ago"),
                                             (timedelta(hours=5), "5h ago"), (timedelta(days=2), "2d ago")])
def test_ages_read_in_the_largest_whole_unit(delta, text):
    assert render.age(iso(NOW - delta), now=NOW) == text
    assert render.age(None, now=NOW) == "-"


def test_progress_in_a_log_prints_a_line_per_change_only():
    out, now = io.StringIO(), [0.0]
    progress = Progress(out, tty=False, clock=lambda: now[0])
    progress.update("waiting for the host")
    now[0] = 3.0
    progress.update("waiting for the host")
    progress.update("staging: r-old -> r-new")
    progress.note("a note")
    assert out.getvalue() == "waiting for the host (0s)\nstaging: r-old -> r-new (3s)\na note\n"


def test_progress_on_a_terminal_redraws_one_line_and_clears_it():
    out = io.StringIO()
    with Progress(out, tty=True, clock=lambda: 7.0) as progress:
        progress.update("waiting")
        progress.update("waiting")
    assert "\n" not in out.getvalue()
    assert out.getvalue().count("\r\x1b[K") == 3 and "waiting (0s)" in out.getvalue()
