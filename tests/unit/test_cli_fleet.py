"""`shipbot apply`, `shipbot config` and `shipbot history` against the real API functions (functions/api.py over the in-memory
engine), joined by an httpx transport that turns each request into the func.HttpRequest the host would pass."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import azure.functions as func
import httpx
import pytest

from cli.main import main
from functions import common
from test_engine import World
from test_functions import FLEET, FUNCTIONS

ROUTES = {"/api/fleet": "fleet", "/api/fleet/history": "fleet_history",
          "/api/environments/staging/history": "environment_history"}


@pytest.fixture
def world(monkeypatch) -> World:
    world = World()
    settings = common.Settings.from_env({"SHIPBOT_REGISTRY": "registry.test"})
    monkeypatch.setattr(common, "settings", lambda: settings)
    monkeypatch.setattr(common, "bot", lambda: world.bot(settings))
    return world


def transport() -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        name = ROUTES[request.url.path]
        route_params = {"environment": request.url.path.split("/")[3]} if name == "environment_history" else {}
        req = func.HttpRequest(request.method, str(request.url), headers=dict(request.headers),
                               params=dict(request.url.params), route_params=route_params, body=request.content)
        response = FUNCTIONS[name](req)
        return httpx.Response(response.status_code, content=response.get_body(),
                              headers={"Content-Type": response.mimetype})
    return httpx.MockTransport(handle)


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv), environ={"SHIPBOT_API_KEY": "k", "SHIPBOT_ACTOR": "alice@laptop"},
                    transport=transport())
    return code, out.getvalue(), err.getvalue()


def test_apply_keeps_a_new_version_and_config_shows_it_and_its_history(world, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_bytes(FLEET)

    code, out, _ = run("apply", "-f", str(path), "--reason", "one app")
    assert (code, out.strip()) == (0, "applied fleet version 1 (diabetes) as alice@laptop")
    assert run("apply", "-f", "-", stdin=FLEET.decode().replace("8081", "8082"))[0] == 0

    code, out, _ = run("config")
    assert code == 0 and out.startswith("# version 2, applied by alice@laptop at ") and "port: 8082" in out
    assert "port: 8081" in run("config", "--version", "1")[1]
    code, out, _ = run("config", "--history")
    assert [line.split()[0] for line in out.splitlines()] == ["2", "1"] and out.rstrip().endswith("one app")
    assert [v["version"] for v in json.loads(run("config", "--history", "--json")[1])] == [2, 1]


def test_a_bad_file_prints_every_problem_with_its_line_and_applies_nothing(world, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_bytes(FLEET.replace(b"port: 8081", b"port: 80").replace(b"    image: shipbot/app\n", b""))

    code, _, err = run("apply", "-f", str(path))

    assert code == 1
    lines = err.splitlines()
    assert lines[0] == f"shipbot: {path} was not applied, 2 problems:"
    assert lines[1].startswith(f"  {path}: line 2, apps[diabetes].image: required")
    assert lines[2].startswith(f"  {path}: line 5, apps[diabetes].environments[staging].target.port: ")
    assert world.engine.ledger.list_fleet() == []


def test_with_nothing_applied_config_shows_the_app_the_settings_describe(world):
    code, out, _ = run("config")

    assert code == 0 and out.startswith("# no fleet file applied: the app settings describe one application")
    assert "name: staging" in out and "name: production" in out


def test_a_file_that_cannot_be_read_is_a_usage_error(world, tmp_path):
    code, _, err = run("apply", "-f", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err


def test_history_shows_an_environments_every_entry_archived_ones_included(world):
    from datetime import UTC, datetime, timedelta

    from shared.releases import HISTORY_LIMIT, Entry

    start = datetime(2026, 3, 1, tzinfo=UTC)
    for n in range(HISTORY_LIMIT + 10):
        world.engine.ledger.update_environment("staging", lambda e, n=n: e.with_(
            entry=Entry(start + timedelta(minutes=n), "deployed to staging", "shipbot", f"r-{n}")))

    code, out, _ = run("history", "staging")
    lines = out.splitlines()
    assert code == 0 and len(lines) == HISTORY_LIMIT + 10
    assert lines[0].startswith("2026-03-01 00:00:00  deployed to staging") and lines[0].endswith("r-0")
    assert run("history", "staging", "--limit", "2")[1].splitlines()[-1].endswith(f"r-{HISTORY_LIMIT + 9}")
    assert len(world.engine.ledger.get_environment("staging").history) <= HISTORY_LIMIT


def test_the_fleet_view_has_a_row_per_environment_and_says_what_waits():
    from datetime import UTC, datetime

    from cli import render

    apps = [{"name": "app", "environments": [{"name": "staging", "rule": "on_green", "waiting": "",
                                               "current": {"release_id": "r-1", "at": "2026-12-04T10:00:00Z",
                                                           "by": "shipbot"}}]},
            {"name": "churn", "environments": [{"name": "dev", "rule": "on_green", "current": None},
                                                {"name": "qa", "rule": "on_green",
                                                 "waiting": "release r-2 is not approved for qa (shipbot approve)"}]}]
    out = render.fleet_view(apps, now=datetime(2026, 12, 4, 11, tzinfo=UTC)).splitlines()
    assert out[0].split() == ["APP", "ENVIRONMENT", "RULE", "RELEASE", "SINCE", "BY", "URL"]
    assert [line.split()[:2] for line in out[1:4]] == [["app", "staging"], ["churn", "dev"], ["churn", "qa"]]
    assert "r-1" in out[1] and "1h ago" in out[1]
    assert out[4:] == ["churn: qa waits: release r-2 is not approved for qa (shipbot approve)"]
