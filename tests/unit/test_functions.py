"""The triggers in-process, over the in-memory engine: authentication, bad input, and the HTTP contract.

The functions are called as the host calls them: the user function of each registered binding, with real
`azure.functions` request and event objects. Bad input must get a clear 4xx (or a logged acknowledgement
for Event Grid) and leave the ledger untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import azure.functions as func
import pytest
import yaml

import function_app
from functions import common
from shared import fleet, jobs
from test_engine import REPO, World

FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"
SECRET = "s3cret-for-tests"
GITHUB_REPO = "https://github.com/contoso/shipbot-app"  # the repository of fixtures/events/github_push.json
FUNCTIONS = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}


class Out:
    def __init__(self) -> None:
        self.value = None

    def set(self, value) -> None:
        self.value = value

    def get(self):
        return self.value


@pytest.fixture
def world(monkeypatch) -> World:
    world = World()
    settings = common.Settings.from_env({"SHIPBOT_GITHUB_SECRET": SECRET, "SHIPBOT_AZURE_DEVOPS_SECRET": SECRET,
                                         "SHIPBOT_REGISTRY": "registry.test", "SHIPBOT_GIT_REPO": GITHUB_REPO})
    monkeypatch.setattr(common, "settings", lambda: settings)
    monkeypatch.setattr(common, "bot", lambda: world.bot(settings))
    return world


def call(name: str, method: str = "GET", route: str = "", body: bytes = b"", *, headers=None, params=None,
         route_params=None):
    req = func.HttpRequest(method, f"http://localhost/api/{route}", headers=headers or {}, params=params or {},
                           route_params=route_params or {}, body=body)
    out = Out()
    fn = FUNCTIONS[name]
    response = fn(req, jobs=out) if "jobs" in fn.__code__.co_varnames or _takes_jobs(name) else fn(req)
    return response.status_code, json.loads(response.get_body()), out.value


def _takes_jobs(name: str) -> bool:
    return name in {"git_webhook", "deploy", "promote", "rollback"}


def github_push(commit: str, ref: str = "refs/heads/main") -> bytes:
    doc = json.loads((FIXTURES / "github_push.json").read_text())
    doc["ref"], doc["after"] = ref, commit
    doc["head_commit"]["id"] = commit
    return json.dumps(doc).encode()


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1", "X-Hub-Signature-256": f"sha256={digest}",
            "Content-Type": "application/json"}


def test_every_function_is_registered_by_name():
    assert {"model_uploaded", "model_registered", "image_pushed", "git_webhook", "nightly_promotion", "reconcile", "run_job",
            "releases", "release", "hold", "environments", "deploy", "promote", "rollback"} <= set(FUNCTIONS)


def test_signed_github_push_plans_a_release(world):
    world.models.put("diabetes", "1", {"model.joblib": b"m"}, uploaded=datetime.now(UTC))
    world.source.commit("c2" * 20, at=datetime.now(UTC))
    body = github_push("c2" * 20)
    status, doc, _ = call("git_webhook", "POST", "webhooks/github", body, headers=signed(body),
                          route_params={"provider": "github"})
    assert status == 202 and doc["release"]["commit"] == "c2" * 20


@pytest.mark.parametrize("headers", [
    {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"},  # no signature
    "forged",
])
def test_unsigned_or_forged_webhook_is_401_and_changes_nothing(world, headers):
    body = github_push("c2" * 20)
    if headers == "forged":
        headers = signed(body, secret="not-the-secret")
    status, doc, out = call("git_webhook", "POST", "webhooks/github", body, headers=headers,
                            route_params={"provider": "github"})
    assert status == 401 and doc["error"]["code"] == "unauthenticated"
    assert out is None and world.ledger.writes == 0 and not world.builder.requests
    assert SECRET not in json.dumps(doc)


def test_huge_webhook_body_is_413(world):
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    status, doc, _ = call("git_webhook", "POST", "webhooks/github", body, headers=signed(body),
                          route_params={"provider": "github"})
    assert status == 413 and world.ledger.writes == 0


def test_unknown_webhook_provider_is_404(world):
    status, doc, _ = call("git_webhook", "POST", "webhooks/gitlab", b"{}", route_params={"provider": "gitlab"})
    assert status == 404


def event_grid(doc: dict) -> func.EventGridEvent:
    return func.EventGridEvent(id=doc["id"], data=doc["data"], topic=doc.get("topic"), subject=doc["subject"],
                               event_type=doc["eventType"],
                               event_time=datetime.fromisoformat(doc["eventTime"].replace("Z", "+00:00")),
                               data_version=doc.get("dataVersion", "1.0"))


@pytest.mark.parametrize("subject", [
    "/blobServices/default/containers/models/blobs/diabetes/../etc/model.joblib",
    "/blobServices/default/containers/models/blobs/diabetes/1/sub/dir/model.joblib",
    "/blobServices/default/containers/models/blobs/dia betes/1/model.joblib",
    "/blobServices/default/containers/other/blobs/diabetes/1/model.joblib",
])
def test_odd_blob_names_are_acknowledged_and_change_nothing(world, subject):
    doc = json.loads((FIXTURES / "eventgrid_blob_created.json").read_text())
    doc = doc[0] if isinstance(doc, list) else doc
    doc["subject"] = subject
    out = Out()
    FUNCTIONS["model_uploaded"](event_grid(doc), jobs=out)
    assert out.value is None and world.ledger.writes == 0 and not world.builder.requests


def test_a_model_registered_event_nobody_follows_from_the_registry_changes_nothing(world):
    """The settings' application follows the models container: a registration is acknowledged, not built."""
    doc = json.loads((FIXTURES / "eventgrid_model_registered.json").read_text())
    world.models.put("diabetes", "3", {"model.joblib": b"m"}, uploaded=datetime.now(UTC))
    out = Out()

    FUNCTIONS["model_registered"](event_grid(doc), jobs=out)

    assert out.value is None and world.ledger.writes == 0 and not world.builder.requests


@pytest.mark.parametrize("data", [{"modelName": "a/../b", "modelVersion": "1"}, {"modelVersion": "1"}, "x"])
def test_a_malformed_model_registered_event_is_acknowledged_and_changes_nothing(world, data):
    doc = json.loads((FIXTURES / "eventgrid_model_registered.json").read_text())
    doc["data"] = data
    out = Out()

    FUNCTIONS["model_registered"](event_grid(doc), jobs=out)

    assert out.value is None and world.ledger.writes == 0 and not world.builder.requests


def test_blob_created_event_builds(world):
    doc = json.loads((FIXTURES / "eventgrid_blob_created.json").read_text())
    doc = doc[0] if isinstance(doc, list) else doc
    name, version = doc["subject"].split("/blobs/")[1].split("/")[:2]
    world.models.put(name, version, {"model.joblib": b"m"}, uploaded=datetime.now(UTC))
    FUNCTIONS["model_uploaded"](event_grid(doc), jobs=Out())
    assert len(world.builder.requests) == 1


def test_manual_api_build_list_get_and_errors(world):
    world.models.put("diabetes", "1", {"model.joblib": b"m"}, uploaded=datetime.now(UTC))
    status, doc, _ = call("releases", "POST", "releases", b'{"model": "diabetes/1"}',
                          headers={"x-shipbot-actor": "ana"})
    assert status == 202 and doc["release"]["history"][0]["by"] == "ana"
    release_id = doc["release"]["id"]
    assert call("releases", "POST", "releases", b"")[0] == 200  # the same release again: no new build
    assert call("releases", "GET", "releases")[1]["releases"][0]["id"] == release_id
    assert call("release", route_params={"release_id": release_id})[1]["id"] == release_id
    assert call("release", route_params={"release_id": "r-nope"})[0] == 404
    assert call("releases", "POST", "releases", b"{not json")[0] == 400
    assert call("releases", "POST", "releases", b'["a"]')[0] == 400
    assert call("releases", "POST", "releases", b'{"commit": 5}')[0] == 400
    assert call("releases", "GET", "releases", params={"limit": "-1"})[0] == 400


def test_deploy_promote_rollback_answer_202_with_a_job(world):
    first = world.ship("1")
    world.ship("2")
    status, doc, out = call("deploy", "POST", "", json.dumps({"release_id": first, "reason": "x"}).encode(),
                            route_params={"environment": "staging"})
    assert status == 409 and "no downgrade" in doc["error"]["message"] and out is None
    status, doc, out = call("deploy", "POST", "", json.dumps({"release_id": first, "force": True}).encode(),
                            route_params={"environment": "staging"})
    assert status == 202 and doc["release_id"] == first and jobs.Job.from_message(out[0]).force
    assert call("deploy", "POST", "", b'{"release_id": "r-x"}', route_params={"environment": "qa"})[0] == 404
    status, doc, out = call("promote", "POST", "", b"", route_params={"environment": "production"})
    assert status == 202 and doc["job"]["environment"] == "production"
    status, doc, out = call("rollback", "POST", "", b'{"reason": "r"}', route_params={"environment": "staging"})
    assert status == 202 and out


@pytest.mark.parametrize("digest", ["sha256:abc", "SHA256:" + "a" * 64, "sha256:" + "g" * 64, "md5:" + "a" * 32,
                                    "sha256:" + "a" * 64 + "/../x"])
def test_deploy_by_a_malformed_digest_is_400_and_changes_nothing(world, digest):
    world.ship("1")
    writes = world.ledger.writes
    status, doc, out = call("deploy", "POST", "", json.dumps({"digest": digest}).encode(),
                            route_params={"environment": "staging"})
    assert status == 400 and "not sha256:" in doc["error"]["message"] and out is None
    assert world.ledger.writes == writes


def test_deploy_by_a_well_formed_digest_no_release_has_is_404(world):
    world.ship("1")
    status, doc, _ = call("deploy", "POST", "", json.dumps({"digest": "sha256:" + "0" * 64}).encode(),
                          route_params={"environment": "staging"})
    assert status == 404 and "no release has the image" in doc["error"]["message"]


def test_environments_lists_both_with_what_runs(world):
    release_id = world.ship("1")
    status, doc, _ = call("environments", "GET", "environments")
    staging = {e["name"]: e for e in doc["environments"]}["staging"]
    assert staging["current"]["release_id"] == release_id and staging["running"].startswith(REPO)


def test_bad_queue_message_is_dropped_not_retried(world):
    message = func.QueueMessage(id="m1", body=b"not a job")
    out = Out()
    FUNCTIONS["run_job"](message, jobs=out)  # does not raise: a poison loop helps nobody
    assert world.ledger.writes == 0 and out.value is None


def test_a_green_smoke_test_job_enqueues_the_staging_rollout_as_a_job_of_its_own(world):
    world.deliver(world.upload("1"))
    [test_job] = world.finish_builds()
    out = Out()

    FUNCTIONS["run_job"](func.QueueMessage(id="m1", body=test_job.to_message().encode()), jobs=out)

    (message,) = out.value
    rollout = jobs.Job.from_message(message.encode())
    assert (rollout.kind, rollout.environment, rollout.release_id) == ("rollout", "staging", test_job.release_id)
    assert world.ledger.get_environment("staging").current is None  # not yet: that is the next invocation
    FUNCTIONS["run_job"](func.QueueMessage(id="m2", body=message.encode()), jobs=Out())
    assert world.ledger.get_environment("staging").current.release_id == test_job.release_id


def test_cloudevents_delivery_builds_like_event_grid(world):
    doc = json.loads((FIXTURES / "cloudevents_blob_created.json").read_text())
    doc = doc[0] if isinstance(doc, list) else doc
    name, version = doc["subject"].split("/blobs/")[1].split("/")[:2]
    world.models.put(name, version, {"model.joblib": b"m"}, uploaded=datetime.now(UTC))
    event = func.CloudEvent(id=doc["id"], source=doc["source"], type=doc["type"], specversion="1.0",
                            data=doc["data"], time=datetime.fromisoformat(doc["time"].replace("Z", "+00:00")),
                            subject=doc["subject"])
    FUNCTIONS["model_uploaded"](event, jobs=Out())
    assert len(world.builder.requests) == 1


def test_azure_devops_push_with_the_shared_secret_plans_a_release(world, monkeypatch):
    import base64
    import dataclasses
    on_azure_repos = dataclasses.replace(common.settings(), git_repo="https://dev.azure.com/contoso/ShipBot/_git/shipbot-app")
    monkeypatch.setattr(common, "bot", lambda: world.bot(on_azure_repos))
    world.models.put("diabetes", "1", {"model.joblib": b"m"}, uploaded=datetime.now(UTC))
    body = (FIXTURES / "azure_devops_git_push.json").read_bytes()
    commit = json.loads(body)["resource"]["refUpdates"][0]["newObjectId"]
    world.source.commit(commit, at=datetime.now(UTC))
    good = {"Authorization": "Basic " + base64.b64encode(f"shipbot:{SECRET}".encode()).decode(),
            "Content-Type": "application/json"}
    bad = {"Authorization": "Basic " + base64.b64encode(b"shipbot:guess").decode()}
    status, doc, _ = call("git_webhook", "POST", "webhooks/azure-devops", body, headers=bad,
                          route_params={"provider": "azure-devops"})
    assert status == 401 and world.ledger.writes == 0
    status, doc, _ = call("git_webhook", "POST", "webhooks/azure-devops", body, headers=good,
                          route_params={"provider": "azure-devops"})
    assert status == 202 and doc["release"]["commit"] == commit


FLEET = b"""\
apps:
  - name: diabetes
    image: shipbot/app
    models: [diabetes]
    environments:
      - {name: staging, target: {kind: local, port: 8081}, rule: on_green}
"""


def test_with_no_fleet_file_the_fleet_is_the_one_app_the_settings_describe(world):
    status, doc, _ = call("fleet", route="fleet")

    assert (status, doc["version"], doc["apps"]) == (200, 0, ["app"])
    assert "no fleet file applied" in doc["reason"]
    assert [env["name"] for env in yaml.safe_load(doc["text"])["apps"][0]["environments"]] == ["staging", "production"]


def test_a_fleet_file_is_applied_versioned_and_read_back(world):
    status, doc, _ = call("fleet", "PUT", "fleet", FLEET, headers={"x-shipbot-actor": "alice"},
                          params={"reason": "one app"})
    assert (status, doc["version"], doc["applied_by"], doc["reason"], doc["apps"]) == (
        200, 1, "alice", "one app", ["diabetes"])
    call("fleet", "PUT", "fleet", FLEET.replace(b"port: 8081", b"port: 8082"), headers={"x-shipbot-actor": "bob"})

    status, doc, _ = call("fleet", route="fleet")
    assert (status, doc["version"], doc["applied_by"]) == (200, 2, "bob") and b"8082" in doc["text"].encode()
    assert call("fleet", route="fleet", params={"version": "1"})[1]["text"] == FLEET.decode()
    status, doc, _ = call("fleet_history", route="fleet/history")
    assert [(v["version"], v["applied_by"]) for v in doc["versions"]] == [(2, "bob"), (1, "alice")]
    assert all("text" not in v for v in doc["versions"])
    assert call("fleet", route="fleet", params={"version": "7"})[0] == 404


def test_a_bad_fleet_file_is_400_with_every_problem_and_nothing_is_applied(world):
    bad = FLEET.replace(b"port: 8081", b"port: 80").replace(b"rule: on_green", b"rule: someday")

    status, doc, _ = call("fleet", "PUT", "fleet", bad)

    assert status == 400 and doc["error"]["code"] == "bad_request"
    assert [p.split(":")[0] for p in doc["error"]["problems"]] == [
        "line 6, apps[diabetes].environments[staging].target.port", "line 6, apps[diabetes].environments[staging].rule"]
    assert world.engine.ledger.list_fleet() == []
    assert call("fleet", "PUT", "fleet", b"\xff\xfe")[0] == 400
    assert call("fleet", "PUT", "fleet", b"#" * (fleet.MAX_BYTES + 1))[0] == 413
    assert world.engine.ledger.list_fleet() == []
