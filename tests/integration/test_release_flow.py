"""ShipBot end to end on the real local stack: once per trigger, the rules, and bad input.

Every test gets its own ShipBot (tests/integration/release_stack.py): the real local host serving the real
function_app, the real event bridge, Azurite, the Docker engine and the registry. Nothing is faked here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys

import docker
import httpx
import pytest

from release_stack import REGISTRY, ROOT, URL, Bot, previous_host
from shared import buildcontext
from shared.adapters.local.docker_builder import BuildRequest, DockerBuilder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def stack_daemons():
    subprocess.run(["bash", "scripts/local-stack.sh", "up"], check=True)
    stack = previous_host()
    yield
    if stack is not None:
        from stack import lifecycle
        lifecycle.up(stack)


@pytest.fixture
def bot(tmp_path):
    bot = Bot(tmp_path).start()
    yield bot
    bot.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two sample models with different weights (two releases), trained once."""
    out = {}
    for version, alpha in (("1", 1.0), ("2", 0.5)):
        folder = tmp_path_factory.mktemp(f"model{version}")
        subprocess.run([sys.executable, "samples/diabetes/train.py", str(folder), "--alpha", str(alpha)],
                       check=True, capture_output=True)
        out[version] = folder
    return out


def live_on_staging(bot: Bot, models, version: str = "1") -> dict:
    bot.upload_model(models[version], version)
    release = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == version, what=f"v{version} planned")
    release = bot.wait_settled(release["id"])
    assert release["status"] == "green", release
    bot.wait_running("staging", release["id"])
    return release


# -- once per trigger -------------------------------------------------------------------------------------------
def test_model_upload_goes_live_on_staging(bot, models):
    sha, hook = bot.commit_and_push("app v1")
    assert "HTTP 200" in hook  # no model yet: the push is acknowledged, nothing to build
    release = live_on_staging(bot, models)
    assert release["commit"] == sha and release["model"]["sha256"] == buildcontext.sha256_file(models["1"] / "model.joblib")
    version = bot.version("staging")
    assert (version["release_id"], version["git_commit"], version["model_version"]) == (release["id"], sha, "1")
    what = [e["what"] for e in bot.release(release["id"])["history"]]
    assert what[:5] == ["planned", "build started", "image pushed", "smoke test started", "smoke test passed"]
    assert "deployed to staging" in what
    score = httpx.post(f"http://127.0.0.1:{bot.ports['staging']}/score",
                       content=(models["1"] / "sample-request.json").read_bytes(), timeout=5).json()
    expected = json.loads((models["1"] / "sample-response.json").read_text())
    assert score["result"] == pytest.approx(expected["result"], rel=1e-6)


def test_git_push_builds_that_commit_with_the_current_model(bot, models):
    bot.commit_and_push("app v1")
    first = live_on_staging(bot, models)
    sha, hook = bot.commit_and_push("app v2", change="a new commit")
    assert "HTTP 202" in hook
    second = bot.wait_release(lambda r: r["commit"] == sha, what="the pushed commit is planned")
    assert second["model"] == first["model"] and second["trigger"].startswith("github push")
    bot.wait_running("staging", bot.wait_settled(second["id"])["id"])


def test_foreign_image_push_is_smoke_tested_and_deployed(bot, models, tmp_path):
    bot.commit_and_push("app v1")
    source = tmp_path / "src"
    subprocess.run(["cp", "-r", str(bot.work), str(source)], check=True)
    built = DockerBuilder(client=docker.from_env()).build(BuildRequest(
        source=source, model_dir=models["1"], repository=f"{REGISTRY}/{bot.foreign_repository}", tag="v9",
        model_name="diabetes", model_version="1", git_commit="f" * 40, release_id="pipeline-9"))
    release = bot.wait_release(lambda r: r["digest"] == built.digest, what="the foreign image is seen")
    assert release["id"].startswith("i-") and release["commit"] == "f" * 40
    assert bot.wait_settled(release["id"])["status"] == "green"
    env = bot.wait_running("staging", release["id"])
    assert env["running"] == f"{REGISTRY}/{bot.foreign_repository}@{built.digest}"
    assert bot.version("staging")["release_id"] == "pipeline-9"


def test_image_outside_the_allow_list_is_ignored(bot, models, tmp_path):
    bot.commit_and_push("app v1")
    before = bot.releases()
    built = DockerBuilder(client=docker.from_env()).build(BuildRequest(
        source=bot.work, model_dir=models["1"], repository=f"{REGISTRY}/shipbot-{bot.name}/elsewhere", tag="x",
        model_name="diabetes", model_version="1"))
    bot.wait(lambda: f"ignored: repository {built.repository} is no application's" in bot.host_log(),
             what="the push is acknowledged and ignored")
    assert bot.releases() == before


def test_promotion_takes_the_green_staging_release_to_production(bot, models):
    # The schedule rule that does this at night is the engine's (tests/unit/test_engine.py, on a clock it moves).
    bot.commit_and_push("app v1")
    release = live_on_staging(bot, models)
    promoted = bot.api("POST", "/api/environments/production/promote", json={"reason": "the night's job"})
    assert promoted.status_code == 202 and promoted.json()["release_id"] == release["id"]
    env = bot.wait_running("production", release["id"])
    assert env["current"]["by"] == "tester"
    assert bot.version("production")["release_id"] == release["id"]


def test_manual_api_builds_deploys_and_rolls_back(bot, models):
    bot.commit_and_push("app v1")
    first = live_on_staging(bot, models, "1")
    bot.upload_model(models["2"], "2")
    second = bot.wait_release(lambda r: r["model"]["version"] == "2", what="v2 planned")
    bot.wait_running("staging", bot.wait_settled(second["id"])["id"])
    again = bot.api("POST", "/api/releases", json={"model": "diabetes/1"})
    assert again.status_code == 200 and again.json()["release"]["id"] == first["id"]  # exists: no new build
    refused = bot.api("POST", "/api/environments/staging/deploy", json={"release_id": first["id"]})
    assert refused.status_code == 409 and "no downgrade" in refused.json()["error"]["message"]
    rollback = bot.api("POST", "/api/environments/staging/rollback", json={"reason": "latency"})
    assert rollback.status_code == 202 and rollback.json()["release_id"] == first["id"]
    bot.wait_running("staging", first["id"])
    assert bot.release(second["id"])["rolled_back"]
    promoted = bot.api("POST", "/api/environments/production/promote", json={})
    assert promoted.json()["release_id"] == first["id"]  # the rolled-back release is never promoted
    env = bot.wait_running("production", first["id"])
    assert env["current"]["release_id"] == first["id"]


# -- rules ----------------------------------------------------------------------------------------------------
def blob_created(bot: Bot, blob: str, event_id: str) -> list[dict]:
    props = bot.blobs.get_blob_client(f"models-{bot.name}", blob).get_blob_properties()
    return [{"id": event_id, "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
             "subject": f"/blobServices/default/containers/models-{bot.name}/blobs/{blob}",
             "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2026-11-21T00:00:00Z", "dataVersion": "",
             "metadataVersion": "1",
             "data": {"api": "PutBlob", "clientRequestId": "c", "requestId": "r", "eTag": props.etag,
                      "contentType": "application/octet-stream", "contentLength": props.size, "blobType": "BlockBlob",
                      "url": f"http://127.0.0.1:10000/devstoreaccount1/models-{bot.name}/{blob}",
                      "sequencer": "0" * 32, "storageDiagnostics": {"batchId": "b"}}}]


def deliver(bot: Bot, function: str, events: list[dict], *, key: str | None = None) -> httpx.Response:
    return httpx.post(f"{URL}/runtime/webhooks/eventgrid", params={"functionName": function,
                                                                   "code": key or bot.keys.eventgrid},
                      json=events, headers={"aeg-event-type": "Notification"}, timeout=30)


def test_duplicate_event_builds_once_and_deploys_once(bot, models):
    bot.commit_and_push("app v1")
    release = live_on_staging(bot, models)
    event = blob_created(bot, "diabetes/1/model.joblib", "dup-1")
    assert deliver(bot, "model_uploaded", event).status_code == 200
    assert deliver(bot, "model_uploaded", event).status_code == 200
    history = bot.release(release["id"])["history"]
    assert [e["what"] for e in history].count("build started") == 1
    assert [e["what"] for e in history].count("deployed to staging") == 1
    assert len(bot.releases()) == 1


def test_late_event_of_an_older_model_changes_nothing(bot, models):
    bot.commit_and_push("app v1")
    live_on_staging(bot, models, "1")
    second = live_on_staging(bot, models, "2")
    before = bot.releases()
    assert deliver(bot, "model_uploaded", blob_created(bot, "diabetes/1/model.joblib", "late-1")).status_code == 200
    assert bot.releases() == before
    assert bot.environments()["staging"]["current"]["release_id"] == second["id"]


def test_failing_image_is_not_deployed_and_the_ledger_says_why(bot, models, tmp_path):
    bot.commit_and_push("app v1")
    bad = tmp_path / "bad-model"
    subprocess.run(["cp", "-r", str(models["1"]), str(bad)], check=True)
    (bad / "model.joblib").write_bytes(b"not a model")
    bot.upload_model(bad, "1")
    release = bot.wait_release(lambda r: r["model"]["version"] == "1", what="v1 planned")
    release = bot.wait_settled(release["id"])
    assert release["status"] == "failed" and "smoke test failed" in release["reason"]
    assert bot.environments()["staging"]["current"] is None


def test_wrong_score_is_not_deployed(bot, models, tmp_path):
    bot.commit_and_push("app v1")
    wrong = tmp_path / "wrong"
    subprocess.run(["cp", "-r", str(models["1"]), str(wrong)], check=True)
    response = json.loads((wrong / "sample-response.json").read_text())
    response["result"][0] += 1.0
    (wrong / "sample-response.json").write_text(json.dumps(response))
    bot.upload_model(wrong, "1")
    release = bot.wait_settled(bot.wait_release(lambda r: True, what="planned")["id"])
    assert release["status"] == "failed" and "score" in release["reason"]


def test_lost_events_are_repaired_by_reconcile(tmp_path, models):
    bot = Bot(tmp_path, bridge=False).start()  # Event Grid loses every event: uploads and pushes alike
    try:
        bot.commit_and_push("app v1")
        bot.upload_model(models["1"], "1")
        assert bot.releases() == []

        def reconciled_until_green():
            bot.fire("reconcile")
            releases = bot.releases()
            return releases and releases[0]["status"] == "green" and releases[0]
        release = bot.wait(reconciled_until_green, what="reconcile builds, tests and deploys the release")
        bot.wait_running("staging", release["id"])
        assert "image found" in [e["what"] for e in bot.release(release["id"])["history"]]
    finally:
        bot.stop()


# -- bad input ------------------------------------------------------------------------------------------------
def github(bot: Bot, body: bytes, *, secret: str | None) -> httpx.Response:
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1", "Content-Type": "application/json"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(f"{URL}/api/webhooks/github", content=body, headers=headers, timeout=30)


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(bot, models):
    sha, _ = bot.commit_and_push("app v1")
    bot.upload_model(models["1"], "1")
    release = bot.wait_settled(bot.wait_release(lambda r: True, what="planned")["id"])
    before = bot.releases()
    push = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
    assert github(bot, push, secret=None).status_code == 401
    assert github(bot, push, secret="forged").status_code == 401
    assert github(bot, b"{" + b" " * (2 << 20) + b"}", secret=bot.secret).status_code == 413
    assert github(bot, b"{not json", secret=bot.secret).status_code == 400
    foreign = json.loads((ROOT / "tests" / "fixtures" / "events" / "github_push.json").read_text())
    assert foreign["repository"]["clone_url"] == "https://github.com/contoso/shipbot-app.git"  # not the bot's
    assert github(bot, json.dumps(foreign).encode(), secret=bot.secret).status_code == 200  # acknowledged, no-op
    assert bot.api("GET", "/api/releases", key=None).status_code == 401
    assert bot.api("GET", "/api/releases", key="wrong").status_code == 401
    assert bot.api("POST", "/api/releases", content=b"{oops").status_code == 400
    assert bot.api("POST", "/api/releases", content=b"x" * 100_000).status_code == 413
    assert bot.api("POST", f"/api/releases/{release['id']}/hold", content=b"[1]").status_code == 400
    assert deliver(bot, "model_uploaded", [], key="wrong").status_code == 401
    bad = httpx.post(f"{URL}/runtime/webhooks/eventgrid", params={"functionName": "model_uploaded",
                                                                  "code": bot.keys.eventgrid},
                     content=b"[{", headers={"aeg-event-type": "Notification"}, timeout=10)
    assert bad.status_code == 400
    odd = blob_created(bot, "diabetes/1/model.joblib", "odd-1")
    for subject in ("diabetes/../../etc/model.joblib", "dia betes/1/model.joblib", "diabetes/1/a/b/model.joblib",
                    "x" * 300 + "/1/model.joblib"):
        odd[0]["subject"] = f"/blobServices/default/containers/models-{bot.name}/blobs/{subject}"
        odd[0]["id"] = hashlib.sha1(subject.encode()).hexdigest()
        assert deliver(bot, "model_uploaded", odd).status_code == 200  # acknowledged and logged, not retried
    assert deliver(bot, "model_uploaded", [{"id": "x", "eventType": "Microsoft.Storage.BlobCreated"}]).status_code == 200
    container = bot.blobs.get_container_client(f"models-{bot.name}")
    container.upload_blob("odd name/1/model.joblib", b"x", overwrite=True)
    container.upload_blob("diabetes/1/extra/model.joblib", b"x", overwrite=True)
    assert bot.releases() == before


def test_two_rollouts_at_the_same_moment_run_one_at_a_time(bot, models):
    bot.commit_and_push("app v1")
    first = live_on_staging(bot, models, "1")
    second = live_on_staging(bot, models, "2")
    # Two operators at once; the jobs run on two queue workers in parallel and meet at the lease.
    for release in (first, second):
        response = bot.api("POST", "/api/environments/production/promote",
                           json={"release_id": release["id"], "reason": "race", "force": True})
        assert response.status_code == 202
    bot.wait(lambda: [e["what"] for e in bot.environments()["production"]["history"]].count("deployed") == 2,
             what="both rollouts are recorded")
    env = bot.environments()["production"]
    deployed = [e for e in env["history"] if e["what"] == "deployed"]
    assert env["current"]["release_id"] == deployed[-1]["detail"].split(":")[0]  # the last one recorded won
    running = env["running"].split("@")[1]
    assert running == bot.release(env["current"]["release_id"])["digest"]  # ledger and container agree
    assert env["previous"]["release_id"] != env["current"]["release_id"]
