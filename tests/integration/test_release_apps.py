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


def test_the_flask_sample_is_released_to_staging_and_production_through_its_own_routes(tmp_path, model):
    bot = Bot(tmp_path, app=ROOT / "samples" / "flask-app").start()
    try:
        sha, _ = bot.commit_and_push("the Flask app")
        bot.upload_model(model, "1")
        planned = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == "1", what="the release")
        release = bot.wait_settled(planned["id"])
        assert release["status"] == "green", release
        bot.wait(lambda: (bot.environments()["staging"].get("current") or {}).get("release_id") == release["id"],
                 what="staging runs the release")
        assert about(bot, "staging") == {"release_id": release["id"], "commit": sha}
        scored = httpx.post(f"http://127.0.0.1:{bot.ports['staging']}/score",
                            content=(model / "sample-request.json").read_bytes(),
                            headers={"Content-Type": "application/json"}, timeout=10).json()
        assert scored["result"] == pytest.approx(json.loads((model / "sample-response.json").read_text())["result"])

        bot.fire("nightly_promotion")
        bot.wait(lambda: (bot.environments()["production"].get("current") or {}).get("release_id") == release["id"],
                 what="production runs the release")
        assert about(bot, "production")["release_id"] == release["id"]
        labels = [e["what"] for e in bot.release(release["id"])["history"]]
        assert labels.count("deployed to staging") == 1 and labels.count("deployed to production") == 1
    finally:
        bot.stop()
