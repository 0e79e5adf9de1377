"""The `shipbot` CLI against a real ShipBot on the local stack: every verb that talks to the API, with --wait.

The CLI is a client of the HTTP API only (URL and key from settings), so this is also the check that the API
answers what docs/api.md says. Each call is `cli.main.main(argv, environ=...)`, as the console script runs it.
"""

from __future__ import annotations

import json

import pytest

from cli.main import main as shipbot
from release_stack import URL, Bot
from test_release_flow import live_on_staging, models, stack_daemons  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


@pytest.fixture
def bot(tmp_path):
    bot = Bot(tmp_path).start()
    yield bot
    bot.stop()


def run(bot: Bot, capsys, *argv: str) -> tuple[int, str, str]:
    environ = {"SHIPBOT_API_URL": URL, "SHIPBOT_API_KEY": bot.keys.default_function_key,
               "SHIPBOT_ACTOR": "ops@test", "SHIPBOT_STATE": str(bot.state)}
    code = shipbot(list(argv), environ=environ, tty=False)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_cli_drives_a_release_from_staging_to_production_and_back(bot, models, capsys):
    bot.commit_and_push("app v1")
    first = live_on_staging(bot, models, "1")
    second = live_on_staging(bot, models, "2")

    code, out, err = run(bot, capsys, "status")
    assert code == 0, err
    staging = next(line for line in out.splitlines() if line.startswith("staging"))
    assert second["id"] in staging and "diabetes/2" in staging

    code, out, err = run(bot, capsys, "hold", second["id"], "--reason", "audit")
    assert code == 0 and bot.release(second["id"])["held"]
    code, out, err = run(bot, capsys, "promote", "--reason", "nightly by hand", "--wait")
    assert code == 0, err  # the held release is skipped: the newest other one verified on staging goes
    assert bot.environments()["production"]["current"]["release_id"] == first["id"]
    code, out, err = run(bot, capsys, "unhold", second["id"])
    assert code == 0 and not bot.release(second["id"])["held"]

    code, out, err = run(bot, capsys, "deploy", "staging", first["id"], "--reason", "x", "--wait")
    assert code == 1 and "no downgrade" in err  # refused, with the API's reason
    code, out, err = run(bot, capsys, "rollback", "staging", "--reason", "latency", "--wait")
    assert code == 0, err
    assert bot.environments()["staging"]["current"]["release_id"] == first["id"]
    assert bot.version("staging")["release_id"] == first["id"]

    code, out, err = run(bot, capsys, "releases", "--json")
    assert code == 0 and {r["id"] for r in json.loads(out)["releases"]} >= {first["id"], second["id"]}
    code, out, err = run(bot, capsys, "logs", second["id"])
    assert code == 0 and "rolled back from staging" in out and "ops@test" in out
    code, out, err = run(bot, capsys, "release", "r-0000000000000000")
    assert code == 1 and "no release" in err


def test_the_cli_with_a_wrong_key_says_so_and_changes_nothing(bot, capsys):
    environ = {"SHIPBOT_API_URL": URL, "SHIPBOT_API_KEY": "wrong", "SHIPBOT_STATE": str(bot.state)}
    assert shipbot(["hold", "r-0000000000000000", "--reason", "x"], environ=environ, tty=False) == 1
    err = capsys.readouterr().err
    assert "wrong" not in err.replace("wrong key", "")  # the key itself is never printed
    assert bot.releases() == []
