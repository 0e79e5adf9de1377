"""Applications that are not model_api, released end to end on the real local stack: the Flask sample
(samples/flask-app: its own Dockerfile, its own routes) goes through build, smoke test, staging and, at the
nightly promotion, production, each step checked through the app's own contract (shipbot.toml [smoke])."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from release_stack import Bot, previous_host

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def stack_daemons():
    subprocess.run(["bash", "scripts/local-stack.sh", "up"], check=True, cwd=ROOT)
    stack = previous_host()
    yield
    if stack is not None:
        from stack import lifecycle
        lifecycle.up(stack)


@pytest.fixture(scope="module")
def model(train_model) -> Path:
    return train_model(0.9)


def about(bot: Bot, environment: str) -> dict:
    return httpx.get(f"http://127.0.0.1:{bot.ports[environment]}/about", timeout=5).json()


def first_release(bot: Bot, model: Path, message: str) -> tuple[str, dict]:
    """Pushes the app, uploads model v1 and waits for its release to settle green: (the commit, the release)."""
    sha, _ = bot.commit_and_push(message)
    bot.upload_model(model, "1")
    planned = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == "1", what="the first release")
    release = bot.wait_settled(planned["id"])
    assert release["status"] == "green", release
    return sha, release


def wait_current(bot: Bot, environment: str, release_id: str) -> None:
    """Until the environment's ledger says it runs the release (the Flask app has no /version to ask)."""
    bot.wait(lambda: (bot.environments()[environment].get("current") or {}).get("release_id") == release_id,
             what=f"{environment} runs {release_id}")


def test_the_flask_sample_is_released_to_staging_and_production_through_its_own_routes(tmp_path, model):
    bot = Bot(tmp_path, app=ROOT / "samples" / "flask-app").start()
    try:
        sha, release = first_release(bot, model, "the Flask app")
        wait_current(bot, "staging", release["id"])
        assert about(bot, "staging") == {"release_id": release["id"], "commit": sha}
        scored = httpx.post(f"http://127.0.0.1:{bot.ports['staging']}/score",
                            content=(model / "sample-request.json").read_bytes(),
                            headers={"Content-Type": "application/json"}, timeout=10).json()
        assert scored["result"] == pytest.approx(json.loads((model / "sample-response.json").read_text())["result"])

        assert bot.api("POST", "/api/environments/production/promote", json={}).status_code == 202
        wait_current(bot, "production", release["id"])
        assert about(bot, "production")["release_id"] == release["id"]
        labels = [e["what"] for e in bot.release(release["id"])["history"]]
        assert labels.count("deployed to staging") == 1 and labels.count("deployed to production") == 1
    finally:
        bot.stop()


def test_the_mlops_sample_is_released_around_its_score_py_to_staging_and_production(tmp_path, model):
    bot = Bot(tmp_path, app=ROOT / "samples" / "mlops-score").start()
    try:
        sha, release = first_release(bot, model, "the scoring repository")
        bot.wait_running("staging", release["id"])
        assert bot.version("staging")["git_commit"] == sha
        url = f"http://127.0.0.1:{bot.ports['staging']}/score"
        scored = httpx.post(url, content=(model / "sample-request.json").read_bytes(),
                            headers={"Content-Type": "application/json"}, timeout=10).json()
        assert scored["result"] == pytest.approx(json.loads((model / "sample-response.json").read_text())["result"])
        unread = httpx.post(url, json={"rows": 1}, timeout=10).json()  # the app's own run() answers
        assert unread["error"].startswith('expected {"data": [[...10 numbers...], ...]}'), unread

        assert bot.api("POST", "/api/environments/production/promote", json={}).status_code == 202
        bot.wait_running("production", release["id"])
    finally:
        bot.stop()


# Each bad commit below fails its release with a reason that names what to fix, staging keeps the good release,
# and the commit that fixes it releases normally. One bot, one app, the commits in turn.
HEALTH = '@app.get("/healthcheck")\ndef healthcheck():\n    return jsonify(status="ok")\n'
BAD_COMMITS = [
    ("an unknown manifest key",
     {"shipbot.toml": lambda text: text.replace("[smoke]\n", "[smoke]\ncolour = \"red\"\n")},
     lambda reason: "shipbot.toml, [smoke] colour (line 7): unknown key" in reason),
    ("a Dockerfile that fails to build",
     {"Dockerfile": lambda text: text.replace("COPY app.py .", "RUN echo 'no such wheel: numpy==99' >&2 && exit 3\nCOPY app.py .")},
     lambda reason: "returned a non-zero code: 3" in reason and "no such wheel: numpy==99" in reason),
    ("an app that never gets ready",
     {"app.py": lambda text: text.replace(HEALTH, HEALTH.replace('jsonify(status="ok")', '(jsonify(status="warming"), 503)')),
      "shipbot.toml": lambda text: text.replace("[smoke]\n", "[smoke]\nready_seconds = 4\n")},
     lambda reason: "/healthcheck did not answer 200 within 4 s" in reason and "warming" in reason),
    ("an app that answers the wrong thing",
     {"app.py": lambda text: text.replace(".tolist())", "[::-1].tolist())")},
     lambda reason: "score differs from sample-response.json at result[0]" in reason),
    ("an app that crashes at start",
     {"app.py": lambda text: text.replace("app = Flask(__name__)", "raise RuntimeError('no model for you')\napp = Flask(__name__)")},
     lambda reason: "the container exited (code " in reason and "before /healthcheck answered 200" in reason
     and "Worker failed to boot" in reason),
]


def test_bad_commits_fail_with_a_reason_leave_the_environments_alone_and_the_fix_releases(tmp_path, model):
    # A build that fails sends no event (neither does ACR Tasks'): reconcile finds it, here every 3 s.
    bot = Bot(tmp_path, app=ROOT / "samples" / "flask-app", reconcile_schedule="*/3 * * * * *").start()
    good = {name: (bot.work / name).read_text() for name in ("shipbot.toml", "Dockerfile", "app.py")}
    try:
        _, first = first_release(bot, model, "the Flask app")
        wait_current(bot, "staging", first["id"])

        for what, changes, explains in BAD_COMMITS:
            for name, change in changes.items():
                (bot.work / name).write_text(change(good[name]))
            sha, _ = bot.commit_and_push(what)
            release = bot.wait_settled(bot.wait_release(lambda r: r["commit"] == sha, what=what)["id"])
            assert release["status"] == "failed" and explains(release["reason"]), (what, release["reason"])
            staging = bot.environments()["staging"]
            assert staging["current"]["release_id"] == first["id"], what  # untouched
            assert about(bot, "staging")["release_id"] == first["id"]
            for name in changes:
                (bot.work / name).write_text(good[name])

        sha, _ = bot.commit_and_push("the fix", change="fixed")
        fixed = bot.wait_settled(bot.wait_release(lambda r: r["commit"] == sha, what="the fix")["id"])
        assert fixed["status"] == "green", fixed
        wait_current(bot, "staging", fixed["id"])
        assert about(bot, "staging") == {"release_id": fixed["id"], "commit": sha}
        assert bot.environments()["production"].get("current") is None  # nothing promoted by any of it
    finally:
        bot.stop()
