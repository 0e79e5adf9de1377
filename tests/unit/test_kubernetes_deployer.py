"""KubernetesDeployer against the fake API server (tests/fakes/kube_apiserver.py): the real `kubernetes` client
over HTTPS, Deployments whose status the fake's controller computes. Time that the deployer waits on (409
backoff, /version retries) runs on a fake clock; the fake's own controller runs in real time, in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from shared import contract, errors, ports
from shared.adapters.azure import kubernetes_deployer as kd
from test_bicep_roles import EXPECTED_K8S_RULES
from tests.fakes.kube_apiserver import KubeApiServer

A, B, C = (f"registry.test/app@sha256:{c * 64}" for c in "abc")
TARGET = kd.Target.parse("staging/app/model-api@app:80")


class FakeTime:
    """clock() and sleep() for the deployer: sleeping advances the clock at once, and runs `on_sleep`."""

    def __init__(self) -> None:
        self.now, self.sleeps = 1000.0, []
        self.on_sleep = lambda: None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep()


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer(tokens={"the-token"}) as server:
        server.add_deployment("staging", "app", image=A)
        server.add_service("staging", "app")
        server.versions.update({A: {"release_id": "r-a"}, B: {"release_id": "r-b"}, C: {"release_id": "r-c"}})
        yield server


@pytest.fixture
def time_() -> FakeTime:
    return FakeTime()


@pytest.fixture
def deployer(api: KubeApiServer, time_: FakeTime) -> kd.KubernetesDeployer:
    return kd.KubernetesDeployer(api_client=api.api_client(), targets={"staging": TARGET}, verify_seconds=5,
                                 clock=time_.clock, sleep=time_.sleep)


def patches(api: KubeApiServer) -> list:
    return [r for r in api.requests if r.verb == "patch"]


# -- rollouts ---------------------------------------------------------------------------------------------------
def test_get_running_reports_the_image_of_the_named_container(deployer):
    assert deployer.get_running("staging") == A


def test_get_running_of_a_deployment_that_does_not_exist_is_none(api, deployer):
    deployer.targets["production"] = kd.Target.parse("production/app/model-api@app:80")
    assert deployer.get_running("production") is None


def test_a_deploy_patches_the_image_waits_for_the_rollout_and_verifies(api, deployer):
    verdict = deployer.deploy("staging", B, ports.Expectation("r-b"))

    assert (verdict.passed, verdict.reason) == (True, "")
    assert [name for name, _ in verdict.steps] == ["patch", "rollout", "verify"]
    assert deployer.get_running("staging") == B
    assert {p.image for p in api.pods("staging", "app")} == {B}
    assert all(p.ready for p in api.pods("staging", "app")) and len(api.pods("staging", "app")) == 2
    deployment = api.deployments[("staging", "app")]
    assert deployment["metadata"]["generation"] == 2
    assert deployment["metadata"]["annotations"][kd.PREVIOUS_IMAGE] == A
    assert deployment["metadata"]["annotations"][kd.CHANGE_CAUSE] == "shipbot: r-b"
    assert [p.content_type for p in patches(api)] == ["application/strategic-merge-patch+json"]


def test_the_patch_merges_into_the_named_container_and_leaves_the_others_alone(api, deployer):
    containers = api.deployments[("staging", "app")]["spec"]["template"]["spec"]["containers"]
    containers.insert(0, {"name": "proxy", "image": "envoy:1.30"})

    assert deployer.deploy("staging", B, ports.Expectation("r-b")).passed

    containers = api.deployments[("staging", "app")]["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("proxy", "envoy:1.30"), ("model-api", B)]
    assert containers[1]["ports"] == [{"containerPort": 5001, "protocol": "TCP"}]  # merged, not replaced


def test_a_rollout_that_never_becomes_available_is_rolled_back_to_the_previous_image(api, deployer):
    api.behaviour[C] = "never"

    verdict = deployer.deploy("staging", C, ports.Expectation("r-c"))

    assert verdict.passed is False
    assert verdict.reason == f'deployment "app" exceeded its progress deadline; rolled back to {A}'
    assert [name for name, _ in verdict.steps] == ["patch", "rollout", "rollback"]
    assert deployer.get_running("staging") == A
    assert {p.image for p in api.pods("staging", "app")} == {A}  # the rollback waited for its own rollout
    assert kd.rollout_status(client.AppsV1Api(api.api_client()).read_namespaced_deployment("app", "staging")).done


def test_a_release_that_reports_another_version_is_rolled_back(api, deployer, time_):
    api.versions[C] = {"release_id": "r-other"}

    verdict = deployer.deploy("staging", C, ports.Expectation("r-c"))

    assert verdict.reason == f"/version reports release r-other, expected r-c; rolled back to {A}"
    assert deployer.get_running("staging") == A
    assert sum(time_.sleeps) >= 5  # asked again for verify_seconds (on the fake clock) before giving up


def test_verification_asks_again_until_the_new_pods_answer(api, deployer, time_):
    api.versions[B] = {"release_id": "r-a"}  # as if the Service still routed to an old pod
    time_.on_sleep = lambda: api.versions.__setitem__(B, {"release_id": "r-b"})

    verdict = deployer.deploy("staging", B, ports.Expectation("r-b"))

    assert verdict.passed, verdict.reason
    assert len(time_.sleeps) == 1


def test_the_deployers_own_deadline_ends_a_rollout_that_never_settles(api, time_):
    api.behaviour[C] = "never"
    api.progress_deadline = 600  # the cluster would wait ten minutes; the deployer's budget is shorter
    deployer = kd.KubernetesDeployer(api_client=api.api_client(), targets={"staging": TARGET}, rollout_seconds=1)

    verdict = deployer.deploy("staging", C, ports.Expectation("r-c"))

    assert verdict.reason.startswith("the rollout did not complete within 1 s: ")
    assert verdict.reason.endswith(f"; rolled back to {A}")
    assert deployer.get_running("staging") == A


def test_deploying_the_image_that_runs_verifies_it_without_a_patch(api, deployer):
    verdict = deployer.deploy("staging", A, ports.Expectation("r-a"))

    assert verdict.passed, verdict.reason
    assert patches(api) == [] and api.deployments[("staging", "app")]["metadata"]["generation"] == 1


def test_the_image_that_runs_failing_verification_has_nothing_to_roll_back_to(api, deployer):
    verdict = deployer.deploy("staging", A, ports.Expectation("r-x"))

    assert verdict.reason == "/version reports release r-a, expected r-x; staging ran " \
        f"{A} before, so there is nothing to roll back to"
    assert patches(api) == []


# -- conflicts and errors ----------------------------------------------------------------------------------------
def test_a_409_on_patch_is_retried_on_a_fresh_read(api, deployer, time_):
    api.fail_next_patches = [409, 409]

    verdict = deployer.deploy("staging", B, ports.Expectation("r-b"))

    assert verdict.passed, verdict.reason
    assert len(patches(api)) == 3 and len(time_.sleeps) == 2
    assert api.deployments[("staging", "app")]["metadata"]["annotations"][kd.PREVIOUS_IMAGE] == A


def test_a_change_between_read_and_patch_is_a_conflict_not_a_lost_previous_image(api, deployer, time_):
    original = deployer._read

    def read_then_someone_else_patches(target):
        deployment = original(target)
        if not time_.sleeps:  # the first attempt: another client sets the image to B in between
            client.AppsV1Api(api.api_client()).patch_namespaced_deployment(
                "app", "staging", {"spec": {"template": {"spec": {"containers": [{"name": "model-api", "image": B}]}}}},
                _content_type=kd.STRATEGIC_MERGE)
        return deployment

    deployer._read = read_then_someone_else_patches
    assert deployer._patch_image(TARGET, C, cause="test") == (B, None)  # what it replaced, read after the 409
    assert len(time_.sleeps) >= 1  # (the controller's status writes during B's rollout may conflict too)
    assert api.deployments[("staging", "app")]["metadata"]["annotations"][kd.PREVIOUS_IMAGE] == B


def test_conflicts_that_outlast_the_retries_are_transient_and_change_nothing(api, time_):
    api.fail_next_patches = [409] * 3
    deployer = kd.KubernetesDeployer(api_client=api.api_client(), targets={"staging": TARGET}, conflict_attempts=3,
                                     clock=time_.clock, sleep=time_.sleep)

    with pytest.raises(errors.TransientError, match="kept changing"):
        deployer.deploy("staging", B, ports.Expectation("r-b"))

    assert api.image_of("staging", "app") == A and len(time_.sleeps) == 2


def test_a_deployment_that_does_not_exist_cannot_be_deployed_to(api, deployer):
    deployer.targets["production"] = kd.Target.parse("production/app/model-api@app:80")

    with pytest.raises(errors.NotFound, match="infra creates the Deployment"):
        deployer.deploy("production", B, ports.Expectation("r-b"))


def test_a_container_name_the_deployment_lacks_is_not_found(api, deployer):
    deployer.targets["staging"] = kd.Target.parse("staging/app/web@app:80")

    with pytest.raises(errors.NotFound, match="no container 'web'"):
        deployer.deploy("staging", B, ports.Expectation("r-b"))


def test_a_rejected_token_is_a_permanent_error_that_never_quotes_it(api):
    deployer = kd.KubernetesDeployer(api_client=api.api_client("wrong-s3cret"), targets={"staging": TARGET})

    with pytest.raises(errors.PermanentError) as caught:
        deployer.get_running("staging")

    assert "401" in str(caught.value) and "s3cret" not in str(caught.value)


def test_an_api_server_that_does_not_answer_is_transient(api, deployer):
    config = client.Configuration(host="https://127.0.0.1:9", ca_cert_data=api.ca_pem.decode())
    config.retries = False
    deployer = kd.KubernetesDeployer(api_client=client.ApiClient(config), targets={"staging": TARGET})

    with pytest.raises(errors.TransientError, match="did not answer"):
        deployer.get_running("staging")


def test_a_server_error_on_patch_is_transient(api, deployer):
    api.fail_next_patches = [500]

    with pytest.raises(errors.TransientError, match="500"):
        deployer.deploy("staging", B, ports.Expectation("r-b"))
    assert api.image_of("staging", "app") == A


def test_the_deployer_needs_only_the_verbs_of_its_role(api, deployer):
    api.behaviour[C] = "never"
    deployer.deploy("staging", B, ports.Expectation("r-b"))
    deployer.deploy("staging", C, ports.Expectation("r-c"))
    deployer.get_running("staging")

    used = {(r.verb, r.resource, r.namespace, r.name) for r in api.requests}
    assert used == {("get", "deployments", "staging", "app"), ("patch", "deployments", "staging", "app"),
                    ("watch", "deployments", "staging", ""), ("get", "services/proxy", "staging", "app:80")}


# The Role of infra/bicep/modules/kubernetes.bicep (as test_bicep_roles reads it from the file) in the namespace
# of one target, {namespace: staging, deployment: app, service: app}, with serviceProxyPort naming the Service's
# port by name: what its resourceNames give there, for the deployer's target staging/app/model-api@app:http.
NAMES = {"deployments": ["app"], "services/proxy": ["app:http"]}
ROLE = [(verb, rule["resources"][0], name)
        for rule in EXPECTED_K8S_RULES for name in NAMES[rule["resources"][0]] for verb in rule["verbs"]]


def limited(api: KubeApiServer, time_: FakeTime, rules, spec: str = "staging/app/model-api@app:http"):
    api.tokens.add("limited")
    api.rules["limited"] = rules

    def controller_moves_on() -> None:  # a poll on the fake clock waits for the real controller's next step
        seen = api.deployments[("staging", "app")]["metadata"]["resourceVersion"]
        api.wait_for(lambda: api.deployments[("staging", "app")]["metadata"]["resourceVersion"] != seen, timeout=2)
    time_.on_sleep = controller_moves_on
    return kd.KubernetesDeployer(api_client=api.api_client("limited"), targets={"staging": kd.Target.parse(spec)},
                                 verify_seconds=5, clock=time_.clock, sleep=time_.sleep)


def test_the_bicep_role_suffices_for_a_target_whose_service_port_is_named(api, time_):
    deployer = limited(api, time_, ROLE)

    verdict = deployer.deploy("staging", B, ports.Expectation("r-b"))

    assert (verdict.passed, verdict.reason) == (True, "")
    assert not [r for r in api.requests if r.status == 403]


def test_a_proxy_the_role_refuses_is_a_permanent_error_asked_once_and_rolled_back(api, time_):
    deployer = limited(api, time_, ROLE[:3])  # no services/proxy

    with pytest.raises(errors.PermanentError) as caught:
        deployer.deploy("staging", B, ports.Expectation("r-b"))

    message = str(caught.value)
    assert 'cannot get resource "services/proxy" in API group "" in the namespace "staging"' in message
    assert message.endswith(f"rolled back to {A}") and "(the identity or its Role lacks" in message
    assert len([r for r in api.requests if r.resource == "services/proxy"]) == 1  # not asked again and again
    assert api.image_of("staging", "app") == A


def test_a_refused_watch_falls_back_to_reading_and_the_rollout_is_followed_to_its_end(api, time_):
    deployer = limited(api, time_, [rule for rule in ROLE if rule[0] != "watch"])

    first = deployer.deploy("staging", B, ports.Expectation("r-b"))
    second = deployer.deploy("staging", C, ports.Expectation("r-c"))

    assert (first.passed, second.passed) == (True, True)
    assert api.image_of("staging", "app") == C and {p.image for p in api.pods("staging", "app")} == {C}
    assert len([r for r in api.requests if r.verb == "watch"]) == 1  # tried once, then polled with GET


def test_a_refused_watch_during_a_failing_rollout_reports_the_rollback_it_made(api, time_):
    api.behaviour[C] = "never"
    deployer = limited(api, time_, [rule for rule in ROLE if rule[0] != "watch"])

    verdict = deployer.deploy("staging", C, ports.Expectation("r-c"))

    assert verdict.reason == f'deployment "app" exceeded its progress deadline; rolled back to {A}'
    assert {p.image for p in api.pods("staging", "app")} == {A}


def test_a_rollback_keeps_the_change_cause_of_the_revision_it_goes_back_to(api, deployer):
    api.behaviour[C] = "never"
    assert deployer.deploy("staging", B, ports.Expectation("r-b")).passed
    assert not deployer.deploy("staging", C, ports.Expectation("r-c")).passed

    history = api.history("staging", "app")
    assert [cause for _, cause in history] == [None, "shipbot: r-c", "shipbot: r-b"]  # B's revision, reused
    assert [revision for revision, _ in history] == [1, 3, 4]


def test_a_rollback_whose_own_rollout_stalls_says_the_image_is_set_again(api, deployer, time_):
    api.versions[B] = {"release_id": "r-other"}

    def a_breaks_once_b_runs() -> None:
        if api.image_of("staging", "app") == B:
            api.behaviour[A] = "never"
    time_.on_sleep = a_breaks_once_b_runs

    verdict = deployer.deploy("staging", B, ports.Expectation("r-b"))

    assert verdict.reason.startswith("/version reports release r-other, expected r-b; ")
    assert verdict.reason.endswith(f"rolled back to {A} (its image is set again), but that rollout did not "
                                   'complete: deployment "app" exceeded its progress deadline')
    assert api.image_of("staging", "app") == A


def test_an_unknown_environment_is_not_found(deployer):
    with pytest.raises(errors.NotFound, match="known: staging"):
        deployer.get_running("qa")


def test_the_url_is_the_service_proxy_unless_one_is_configured(api, deployer):
    assert deployer.url("staging") == f"{api.url}/api/v1/namespaces/staging/services/app:80/proxy/"
    deployer.targets["staging"] = kd.Target.parse("staging/app/model-api@app:80", url="https://staging.example.com")
    assert deployer.url("staging") == "https://staging.example.com"


# -- the pure parts --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "expected"), [
    ("staging/app/model-api@app:80", kd.Target("staging", "app", "model-api", "app:80")),
    (" prod/web/api@web:http ", kd.Target("prod", "web", "api", "web:http")),
])
def test_a_target_parses_from_its_spec(spec, expected):
    assert kd.Target.parse(spec) == expected


@pytest.mark.parametrize("spec", ["staging/app@app:80", "staging/app/model-api", "staging/app/model-api@app",
                                  "staging//model-api@app:80", "a/b/c@svc:80:90", "a/b/c@svc:"])
def test_a_malformed_target_is_refused_with_the_form_it_should_take(spec):
    with pytest.raises(errors.PermanentError, match="namespace/deployment/container@service:port"):
        kd.Target.parse(spec)


def deployment(generation=2, observed=2, replicas=2, updated=2, total=2, available=2,
               progressing="NewReplicaSetAvailable"):
    return client.V1Deployment.from_dict({
        "metadata": {"name": "app", "generation": generation},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"spec": {"containers": [{"name": "model-api", "image": A}]}}},
        "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                   "availableReplicas": available,
                   "conditions": [{"type": "Progressing", "status": "True", "reason": progressing}]},
    })


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, (True, False, 'deployment "app" successfully rolled out')),
    ({"observed": 1}, (False, False, "waiting for deployment spec update to be observed")),
    ({"progressing": "ProgressDeadlineExceeded", "available": 1},
     (False, True, 'deployment "app" exceeded its progress deadline')),
    ({"updated": 1, "total": 3}, (False, False, "1 out of 2 new replicas have been updated")),
    ({"total": 3}, (False, False, "1 old replicas are pending termination")),
    ({"available": 1}, (False, False, "1 of 2 updated replicas are available")),
    ({"replicas": 0, "updated": 0, "total": 0, "available": 0},
     (True, False, 'deployment "app" successfully rolled out')),
])
def test_rollout_status_says_what_kubectl_rollout_status_says(kwargs, expected):
    assert tuple(kd.rollout_status(deployment(**kwargs))) == expected


@pytest.mark.parametrize(("version", "expected", "reason"), [
    ({"release_id": "r-1", "model_sha256": "m", "git_commit": "c"}, ports.Expectation("r-1", "m", "c"), ""),
    ({"release_id": "r-1"}, ports.Expectation("r-1"), ""),
    ({"release_id": "r-2"}, ports.Expectation("r-1"), "/version reports release r-2, expected r-1"),
    ({"release_id": "r-1", "model_sha256": "x"}, ports.Expectation("r-1", "m"),
     "/version reports model sha256 x, expected m"),
    ({}, ports.Expectation(None, commit="c"), "/version reports commit None, expected c"),
])
def test_a_version_document_is_compared_field_by_field(version, expected, reason):
    assert contract.identity_mismatch(version, expected) == reason


def own_contract(**fields) -> contract.Contract:
    return contract.Contract(port=5000, ready_path="/healthcheck", own=True, **fields)


def test_an_apps_own_identity_route_from_its_contract_is_what_verifies_it(api, time_):
    api.routes[B] = {"/about": {"app": "flask", "release": "r-b"}}
    deployer = kd.KubernetesDeployer(api_client=api.api_client(), targets={"staging": TARGET}, verify_seconds=5,
                                     contracts=lambda ref: own_contract(identity_path="/about"),
                                     clock=time_.clock, sleep=time_.sleep)

    assert deployer.deploy("staging", B, ports.Expectation("r-b")).passed
    api.routes[C] = {"/about": {"release": "r-other"}}
    verdict = deployer.deploy("staging", C, ports.Expectation("r-c", commit="abc"))
    assert verdict.reason == f"/about names neither the release r-c nor the commit abc; rolled back to {B}"


def test_an_app_without_an_identity_route_is_verified_by_its_readiness_path(api, time_):
    deployer = kd.KubernetesDeployer(api_client=api.api_client(), targets={"staging": TARGET}, verify_seconds=5,
                                     contracts=lambda ref: own_contract(identity_path=None),
                                     clock=time_.clock, sleep=time_.sleep)
    verdict = deployer.deploy("staging", B, ports.Expectation("r-b"))
    assert verdict.reason.startswith("/healthcheck through the service proxy of app:80 answered 404")
    assert deployer.get_running("staging") == A

    api.routes[B] = {"/healthcheck": {"status": "ok"}}
    assert deployer.deploy("staging", B, ports.Expectation("r-b")).passed
    assert deployer.get_running("staging") == B


def test_an_unusable_contract_label_fails_the_deploy_before_anything_changes(api, time_):
    def broken(ref: str) -> contract.Contract:
        raise ValueError("the image's dev.shipbot.contract label is unusable: not a JSON object")

    deployer = kd.KubernetesDeployer(api_client=api.api_client(), targets={"staging": TARGET}, contracts=broken,
                                     clock=time_.clock, sleep=time_.sleep)
    verdict = deployer.deploy("staging", B, ports.Expectation("r-b"))
    assert not verdict.passed and "label is unusable" in verdict.reason
    assert patches(api) == [] and deployer.get_running("staging") == A
