"""Faults on the real local stack lose nothing: each case ends with one release, built, tested and deployed
once to staging, and a complete ledger, with no operator.

Each test gets its own ShipBot (release_stack.Bot) whose reconcile timer runs every 5 seconds (in Azure: every
5 minutes, and at every host start, as here). The faults are real: SIGKILL of the host's process group or of
Azurite, the registry stopped, dockerd restarted. The time from the end of each fault to a converged release
is printed at the end of the run (tests/integration/conftest.py), never asserted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from release_stack import Bot, previous_host

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("SHIPBOT_STATE", "/var/lib/shipbot"))
EVERY_5_S = "*/5 * * * * *"


def script(*args: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "local-stack.sh"), *args], check=True, timeout=300,
                   stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module", autouse=True)
def stack_daemons():
    script("up")
    stack = previous_host()
    yield
    script("up")  # whatever a test stopped is running again
    if stack is not None:
        from stack import lifecycle
        lifecycle.up(stack)


@pytest.fixture
def bot(tmp_path):
    bot = Bot(tmp_path, reconcile_schedule=EVERY_5_S, env={"SHIPBOT_LEASE_SECONDS": "15"}).start()  # takeover in 15 s
    yield bot
    bot.stop()


@pytest.fixture(scope="module")
def model(train_model) -> Path:
    return train_model(0.7)


def planned(bot: Bot, model: Path) -> dict:
    bot.commit_and_push("the app")
    bot.upload_model(model, "1")
    return bot.wait_release(lambda r: (r.get("model") or {}).get("version") == "1", what="the release planned")


def status_is(bot: Bot, release_id: str, *statuses: str):
    return lambda: (r := bot.release(release_id))["status"] in statuses and r


def converges(bot: Bot, release_id: str) -> dict:
    """Until the release is green and staging runs it; then checks that nothing was lost or done twice."""
    bot.wait_running("staging", release_id)
    [only] = bot.releases()
    release = bot.release(release_id)
    assert only["id"] == release_id and release["status"] == "green", release
    what = [entry["what"] for entry in release["history"]]
    assert what[0] == "planned" and "smoke test passed" in what and what[-1] == "deployed to staging", what
    assert what.count("deployed to staging") == 1 and "build failed" not in what, what
    assert release["build_attempts"] == 1  # a lost build is not an attempt
    staging = bot.ledger_doc("environments/staging.json")
    assert [e["what"] for e in staging["history"]].count("deployed") == 1 and not staging.get("pending")
    return release


@pytest.mark.parametrize(("step", "status", "repair"), [
    ("the build", "building", "build restarted"),  # the lost build, built again at once
    ("the smoke test", "testing", "smoke test restarted (its tester died)"),
])
def test_the_host_killed_during_a_step_starts_again_and_the_release_finishes(bot, model, converged, step, status,
                                                                             repair):
    release = planned(bot, model)
    bot.wait(status_is(bot, release["id"], status), what=f"{step} running")
    bot.kill()
    started = time.monotonic()
    bot.restart()
    done = converges(bot, release["id"])
    converged(f"host SIGKILLed during {step}", time.monotonic() - started)
    assert repair in [entry["what"] for entry in done["history"]]


def test_the_host_killed_during_a_rollout_starts_again_and_the_rollout_finishes(bot, model, converged):
    release = planned(bot, model)
    bot.wait(lambda: (bot.ledger_doc("environments/staging.json") or {}).get("pending"),
             what="the staging rollout under way")
    bot.kill()
    started = time.monotonic()
    bot.restart()
    converges(bot, release["id"])
    converged("host SIGKILLed during the staging rollout", time.monotonic() - started)


def test_azurite_killed_right_after_planning_loses_nothing(bot, model, converged):
    release = planned(bot, model)
    os.kill(int((STATE / "azurite.pid").read_text()), signal.SIGKILL)
    (STATE / "azurite.pid").unlink()
    script("azurite")
    started = time.monotonic()
    done = converges(bot, release["id"])
    converged("Azurite SIGKILLed right after the release was planned", time.monotonic() - started)
    assert done["history"][0]["what"] == "planned"  # the document written before the crash is there
    models = bot.blobs.get_container_client(f"models-{bot.name}")
    assert sorted(b.name for b in models.list_blobs()) == [
        "diabetes/1/model.joblib", "diabetes/1/sample-request.json", "diabetes/1/sample-response.json"]


def test_the_registry_down_during_the_push_delays_the_build_and_fails_nothing(bot, model, converged):
    release = planned(bot, model)
    bot.wait(status_is(bot, release["id"], "building"), what="the build running")
    script("stop", "registry")
    try:
        bot.wait(lambda: "failed" in bot.host_log() and "retrying in" in bot.host_log(),
                 what="the push failing and being retried")
    finally:
        script("registry")
    started = time.monotonic()
    converges(bot, release["id"])
    converged("registry down during the push, then up again", time.monotonic() - started)


def test_environments_come_back_after_dockerd_restarts(bot, model, converged):
    release = planned(bot, model)
    converges(bot, release["id"])
    pid_file = STATE / "dockerd.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else int(subprocess.check_output(["pgrep", "-xo", "dockerd"]))
    os.kill(pid, signal.SIGTERM)
    bot.wait(lambda: not Path(f"/proc/{pid}").exists(), what="dockerd to stop", timeout=60)
    pid_file.unlink(missing_ok=True)
    script("docker")
    started = time.monotonic()

    def serves() -> bool:
        try:
            return bot.version("staging")["release_id"] == release["id"]
        except (httpx.HTTPError, ValueError):
            return False

    bot.wait(serves, what="staging to serve its release again")
    converged("dockerd restarted while staging served", time.monotonic() - started)
    assert bot.environments()["staging"]["current"]["release_id"] == release["id"]
