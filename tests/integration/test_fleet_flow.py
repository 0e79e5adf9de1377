"""Two applications from one ShipBot on the real local stack, applied with `shipbot apply`: the app settings'
application (staging, production) and a second one with its own git repository, model and image, through
dev -> qa (approval) -> prod. Each event reaches only its application; each application has its own ledger."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from release_stack import REGISTRY, ROOT, URL, Bot, free_port, git
from test_cli_flow import run as cli  # the CLI as the console script runs it, as ops@test
from test_release_flow import models, stack_daemons  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


class Second:
    """The second application's git repository: its own bare repository with the post-receive hook."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.bare, self.work = bot.root / "second.git", bot.root / "second-src"
        self.ports = {"dev": free_port(), "qa": free_port(), "prod": free_port()}
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare), cwd=bot.root)
        shutil.copy(ROOT / "scripts" / "hooks" / "post-receive", self.bare / "hooks" / "post-receive")
        git("config", "shipbot.webhookUrl", f"{URL}/api/webhooks/github", cwd=self.bare)
        git("config", "shipbot.webhookSecretFile", str(bot.root / "webhook-secret"), cwd=self.bare)
        git("clone", "--quiet", str(self.bare), str(self.work), cwd=bot.root)
        for key, value in (("user.name", "Second Developer"), ("user.email", "dev2@test")):
            git("config", key, value, cwd=self.work)
        git("checkout", "--quiet", "-B", "main", cwd=self.work)
        shutil.copytree(ROOT / "model_api", self.work / "model_api", ignore=shutil.ignore_patterns("__pycache__"))

    def push(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        subprocess.run(["git", "push", "--quiet", "origin", "main"], cwd=self.work, check=True, capture_output=True)
        return git("rev-parse", "HEAD", cwd=self.work)


def fleet_file(bot: Bot, second: Second) -> str:
    return f"""\
apps:
  - name: app                      # the app settings' application: its ledger stays where it was
    source: {{repository: "{bot.bare}", branch: main, webhook_secret: "setting:SHIPBOT_GITHUB_SECRET"}}
    models: [diabetes]
    image: {bot.repository}
    environments:
      - {{name: staging, target: {{kind: local, port: {bot.ports["staging"]}}}, rule: on_green}}
      - {{name: production, target: {{kind: local, port: {bot.ports["production"]}}}, rule: manual}}
  - name: second
    source: {{repository: "{second.bare}", branch: main, webhook_secret: "setting:SHIPBOT_GITHUB_SECRET"}}
    models: [churn]
    image: shipbot-{bot.name}/second
    environments:
      - {{name: dev, target: {{kind: local, port: {second.ports["dev"]}}}, rule: on_green}}
      - {{name: qa, target: {{kind: local, port: {second.ports["qa"]}}}, rule: on_green, approval: true}}
      - {{name: prod, target: {{kind: local, port: {second.ports["prod"]}}}, rule: manual}}
"""


def releases(bot: Bot, app: str) -> list[dict]:
    return bot.api("GET", f"/api/releases?app={app}").json()["releases"]


def current(bot: Bot, app: str, environment: str) -> str | None:
    envs = {e["name"]: e for e in bot.api("GET", f"/api/environments?app={app}").json()["environments"]}
    return (envs[environment].get("current") or {}).get("release_id")


def serves(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).json()


def test_two_applications_each_through_its_own_chain(tmp_path, models, capsys):
    bot = Bot(tmp_path).start()
    try:
        second = Second(bot)
        (tmp_path / "fleet.yaml").write_text(fleet_file(bot, second))
        code, out, err = cli(bot, capsys, "apply", "-f", str(tmp_path / "fleet.yaml"), "--reason", "a second app")
        assert code == 0, err
        code, out, err = cli(bot, capsys, "config")
        assert code == 0 and "version 1" in out and "ops@test" in out and "second" in out, out

        bot.commit_and_push("app v1")
        sha = second.push("second v1")
        bot.upload_model(models["1"], "1")                  # diabetes: only `app` follows it
        bot.upload_model(models["2"], "1", name="churn")   # churn: only `second`
        first = bot.wait(lambda: next((r for r in releases(bot, "app") if (r.get("model") or {}).get("name") == "diabetes"),
                                      None), what="app's release")
        other = bot.wait(lambda: next(iter(releases(bot, "second")), None), what="second's release")
        assert other["commit"] == sha and other["model"]["name"] == "churn"
        assert other["repository"] == f"{REGISTRY}/shipbot-{bot.name}/second"
        assert [r["id"] for r in releases(bot, "app")] == [first["id"]]  # each ledger holds its own releases

        bot.wait(lambda: current(bot, "app", "staging") == first["id"], what="app's staging runs its release")
        assert serves(bot.ports["staging"])["release_id"] == first["id"]
        bot.wait(lambda: current(bot, "second", "dev") == other["id"], what="second's dev runs its release")
        assert serves(second.ports["dev"])["release_id"] == other["id"]
        # dev verified it; qa is on_green but needs an approval: the rollout job says qa waits, and nothing moved
        bot.wait(lambda: f"{other['id']} runs on dev; qa waits: release {other['id']} is not approved for qa"
                 in bot.host_log(), what="qa waits for an approval")
        assert current(bot, "second", "qa") is None and current(bot, "app", "production") is None
        code, out, err = cli(bot, capsys, "status")
        assert code == 0 and f"second: qa waits: release {other['id']} is not approved for qa" in out, out

        code, out, err = cli(bot, capsys, "approve", "second", "qa", other["id"], "--reason", "QA signed off",
                             "--wait")
        assert code == 0, err
        assert current(bot, "second", "qa") == other["id"] and serves(second.ports["qa"])["release_id"] == other["id"]
        approved = bot.api("GET", f"/api/releases/{other['id']}?app=second").json()
        assert "qa" in approved["approved"]
        assert any(e["what"] == "approved for qa" and e["by"] == "ops@test" and "QA signed off" in e["detail"]
                   for e in approved["history"]), approved["history"]

        code, out, err = cli(bot, capsys, "--app", "second", "promote", "--to", "prod", "--reason", "ship", "--wait")
        assert code == 0, err
        assert current(bot, "second", "prod") == other["id"] and serves(second.ports["prod"])["release_id"] == other["id"]
        assert current(bot, "app", "production") is None  # the other application's chain did not move

        code, out, err = cli(bot, capsys, "status")
        assert code == 0, err
        assert "app" in out and "second" in out and other["id"] in out and first["id"] in out, out

        unknown = bot.api("GET", "/api/releases?app=nope")
        assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
        assert bot.api("POST", "/api/environments/prod/promote?app=nope", json={}).status_code == 404
        code, out, err = cli(bot, capsys, "releases")  # two applications: the CLI asks which
        assert code != 0 and "--app" in err, err
    finally:
        bot.stop()
