"""The fake API server behaves as the real one does where KubernetesDeployer relies on it: the wire shapes
deserialize into the client's own models, generation moves with the spec only, resourceVersion preconditions
conflict, watches stream one Deployment's events and end at their timeoutSeconds, the service proxy needs a
ready endpoint and fails as the real one does, rollouts keep within the Deployment's maxSurge/maxUnavailable,
ReplicaSets carry revisions and change-causes as the deployment controller keeps them, RBAC refuses with the
real 403."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.fakes.kube_apiserver import KubeApiServer, resolve_fenceposts, strategic_merge, watch_timeout

A, B, C = (f"registry.test/app@sha256:{c * 64}" for c in "abc")
MERGE = "application/strategic-merge-patch+json"
CAUSE = "kubernetes.io/change-cause"


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer(tokens={"t"}) as server:
        server.add_deployment("staging", "app", image=A)
        server.add_deployment("staging", "other", image=A)
        server.add_service("staging", "app")
        yield server


@pytest.fixture
def apps(api: KubeApiServer) -> client.AppsV1Api:
    return client.AppsV1Api(api.api_client())


def image_patch(image: str) -> dict:
    return {"spec": {"template": {"spec": {"containers": [{"name": "model-api", "image": image}]}}}}


def test_a_deployment_reads_as_the_clients_model_with_a_settled_status(apps):
    deployment = apps.read_namespaced_deployment("app", "staging")

    assert isinstance(deployment, client.V1Deployment)
    assert deployment.spec.strategy.rolling_update.max_surge == "25%"
    assert (deployment.status.observed_generation, deployment.status.updated_replicas,
            deployment.status.available_replicas) == (1, 2, 2)
    assert {c.type: c.reason for c in deployment.status.conditions} == {
        "Available": "MinimumReplicasAvailable", "Progressing": "NewReplicaSetAvailable"}


def test_a_spec_change_bumps_the_generation_and_a_metadata_change_does_not(apps):
    after_metadata = apps.patch_namespaced_deployment("app", "staging", {"metadata": {"annotations": {"a": "b"}}},
                                                      _content_type=MERGE)
    after_spec = apps.patch_namespaced_deployment("app", "staging", image_patch(B), _content_type=MERGE)

    assert after_metadata.metadata.generation == 1
    assert after_spec.metadata.generation == 2
    assert after_spec.status.observed_generation == 1  # the controller has not seen it yet


def test_a_stale_resource_version_in_a_patch_is_a_409_conflict_status(apps):
    old = apps.read_namespaced_deployment("app", "staging").metadata.resource_version
    apps.patch_namespaced_deployment("app", "staging", image_patch(B), _content_type=MERGE)

    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment("app", "staging", {"metadata": {"resourceVersion": old}, **image_patch(A)},
                                         _content_type=MERGE)

    assert caught.value.status == 409
    assert json.loads(caught.value.body)["reason"] == "Conflict"


def test_a_json_merge_patch_replaces_lists_where_a_strategic_one_merges_them():
    spec = {"containers": [{"name": "a", "image": "1", "ports": [{"containerPort": 1}]}, {"name": "b", "image": "2"}]}
    strategic, plain = json.loads(json.dumps(spec)), json.loads(json.dumps(spec))

    strategic_merge(strategic, {"containers": [{"name": "b", "image": "3"}]})
    strategic_merge(plain, {"containers": [{"name": "b", "image": "3"}]}, strategic=False)

    assert strategic["containers"] == [spec["containers"][0], {"name": "b", "image": "3"}]
    assert plain["containers"] == [{"name": "b", "image": "3"}]


def test_a_watch_streams_only_the_selected_deployments_rollout_until_it_is_available(api, apps):
    version = apps.patch_namespaced_deployment("app", "staging", image_patch(B), _content_type=MERGE) \
        .metadata.resource_version
    apps.patch_namespaced_deployment("other", "staging", image_patch(B), _content_type=MERGE)
    seen = []

    for event in watch.Watch().stream(apps.list_namespaced_deployment, "staging", field_selector="metadata.name=app",
                                      resource_version=version, timeout_seconds=5):
        status = event["object"].status
        seen.append((event["object"].metadata.name, status.observed_generation,
                     {c.type: c.reason for c in status.conditions}["Progressing"]))
        if seen[-1][2] == "NewReplicaSetAvailable":
            break

    assert {name for name, _, _ in seen} == {"app"}
    assert seen[0] == ("app", 2, "NewReplicaSetCreated") and seen[-1] == ("app", 2, "NewReplicaSetAvailable")
    assert {p.image for p in api.pods("staging", "app")} == {B}


def test_an_image_that_never_becomes_available_exceeds_the_progress_deadline(api, apps):
    api.behaviour[B] = "never"
    apps.patch_namespaced_deployment("app", "staging", image_patch(B), _content_type=MERGE)

    def timed_out() -> bool:
        conditions = api.deployments[("staging", "app")]["status"]["conditions"]
        return any(c["reason"] == "ProgressDeadlineExceeded" and c["status"] == "False" for c in conditions)

    assert api.wait_for(timed_out)
    status = apps.read_namespaced_deployment("app", "staging").status
    assert (status.replicas, status.updated_replicas, status.available_replicas) == (3, 1, 2)  # old pods serve on


def test_the_service_proxy_without_a_ready_endpoint_is_503(api):
    api.add_service("staging", "lonely", selector={"app": "nobody"})
    core = client.CoreV1Api(api.api_client())

    with pytest.raises(ApiException) as caught:
        core.connect_get_namespaced_service_proxy_with_path("lonely:80", "staging", "version")

    assert caught.value.status == 503 and "no endpoints available" in caught.value.body


def test_a_request_without_the_token_is_401(api):
    with pytest.raises(ApiException) as caught:
        client.AppsV1Api(api.api_client("nope")).read_namespaced_deployment("app", "staging")
    assert caught.value.status == 401


def progressing(api: KubeApiServer, name: str = "app") -> dict:
    return next(c for c in api.deployments[("staging", name)]["status"]["conditions"] if c["type"] == "Progressing")


def rolled_out(api: KubeApiServer, name: str = "app"):
    """A predicate for api.wait_for: the controller has observed the spec and every pod is of the new template."""
    def done() -> bool:
        deployment = api.deployments[("staging", name)]
        status = deployment["status"]
        return (status.get("observedGeneration") == deployment["metadata"]["generation"]
                and progressing(api, name)["reason"] == "NewReplicaSetAvailable"
                and status.get("updatedReplicas") == status.get("replicas") == deployment["spec"]["replicas"])
    return done


def timed_out(api: KubeApiServer, name: str = "app"):
    return lambda: progressing(api, name)["reason"] == "ProgressDeadlineExceeded"


def patch_image(apps: client.AppsV1Api, image: str, cause: str | None = None, **annotations: str):
    """The image, and the change-cause and other annotations when given, in one merge patch."""
    body = image_patch(image)
    if cause is not None:
        annotations[CAUSE] = cause
    if annotations:
        body["metadata"] = {"annotations": annotations}
    return apps.patch_namespaced_deployment("app", "staging", body, _content_type=MERGE)


def version_through(core: client.CoreV1Api, id_: str) -> dict:
    """GET /version through the service proxy, as the deployer does."""
    response = core.connect_get_namespaced_service_proxy_with_path(id_, "staging", "version", _preload_content=False)
    return json.loads(response.data)


def refusal(call) -> tuple[int, str]:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value.status, caught.value.body.decode() if isinstance(caught.value.body, bytes) \
        else caught.value.body


# -- 1. the Deployment's own maxSurge / maxUnavailable --------------------------------------------------------
@pytest.mark.parametrize(("surge", "unavailable", "replicas", "expected"), [
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 3, (1, 0)),     # surge rounds up, unavailable down
    ("25%", "25%", 2, (1, 0)),
    (1, 0, 2, (1, 0)),             # infra/bicep/modules/kubernetes.bicep
    ("50%", "10%", 4, (2, 0)),
    (0, "10%", 4, (0, 1)),         # both come to 0: maxUnavailable becomes 1
    ("0%", "0%", 0, (0, 1)),
    (3, "100%", 2, (3, 2)),
])
def test_surge_and_unavailable_resolve_as_the_controller_resolves_them(surge, unavailable, replicas, expected):
    assert resolve_fenceposts(surge, unavailable, replicas) == expected


def test_a_rollout_with_max_unavailable_0_keeps_every_replica_ready_and_surges_one_pod_at_most():
    with KubeApiServer(tokens={"t"}) as api:
        api.add_deployment("staging", "app", image=A, replicas=4, max_surge=1, max_unavailable=0)
        api.behaviour[B] = "never"  # first it stalls at the availability limit, then it proceeds
        apps = client.AppsV1Api(api.api_client())
        version = patch_image(apps, B).metadata.resource_version
        seen = []

        for event in watch.Watch().stream(apps.list_namespaced_deployment, "staging",
                                          field_selector="metadata.name=app", resource_version=version,
                                          timeout_seconds=10):
            status = event["object"].status
            reason = {c.type: c.reason for c in status.conditions}["Progressing"]
            seen.append((status.replicas, status.ready_replicas or 0, status.updated_replicas or 0, reason))
            if reason == "ProgressDeadlineExceeded":
                assert seen[-1][:3] == (5, 4, 1)  # 4 old ready pods and one more that never becomes ready
                api.behaviour[B] = "available"
            if reason == "NewReplicaSetAvailable":
                break

        assert seen[-1] == (4, 4, 4, "NewReplicaSetAvailable")
        assert min(ready for _, ready, _, _ in seen) == 4 and max(total for total, _, _, _ in seen) == 5
        assert {p.image for p in api.pods("staging", "app")} == {B}


@pytest.mark.parametrize(("replicas", "surge", "unavailable", "stalled"), [
    (4, 1, 0, (5, 1, 4)),            # (pods, of which updated, ready) once a never-ready rollout stalls
    (4, "25%", "25%", (5, 2, 3)),
    (3, "25%", "25%", (4, 1, 3)),    # 0.75 pods: surge 1, unavailable 0
    (4, "50%", "10%", (6, 2, 4)),
    (4, 0, "10%", (4, 1, 3)),        # both 0: maxUnavailable 1
    (2, 0, 1, (2, 1, 1)),
])
def test_a_rollout_that_never_becomes_ready_stalls_where_surge_and_unavailable_say(replicas, surge, unavailable,
                                                                                   stalled):
    with KubeApiServer(tokens={"t"}) as api:
        api.add_deployment("staging", "app", image=A, replicas=replicas, max_surge=surge, max_unavailable=unavailable)
        api.behaviour[B] = "never"
        apps = client.AppsV1Api(api.api_client())
        patch_image(apps, B)

        assert api.wait_for(timed_out(api))
        status = apps.read_namespaced_deployment("app", "staging").status
        assert (status.replicas, status.updated_replicas, status.ready_replicas) == stalled
        available = {c.type: c.status for c in status.conditions}["Available"]
        assert available == "True"  # never below replicas - maxUnavailable


def test_a_rolling_update_the_api_server_would_refuse_is_a_422_and_changes_nothing(apps):
    both_zero = {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}}
    not_a_percent = {"spec": {"strategy": {"rollingUpdate": {"maxSurge": "1"}}}}

    for patch, says in [(both_zero, "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 "
                                    "when `maxSurge` is 0"),
                        (not_a_percent, 'spec.strategy.rollingUpdate.maxSurge: Invalid value: "1": a valid percent')]:
        code, body = refusal(lambda: apps.patch_namespaced_deployment("app", "staging", patch, _content_type=MERGE))
        assert code == 422 and json.loads(body)["reason"] == "Invalid"
        assert json.loads(body)["message"].startswith(f'Deployment.apps "app" is invalid: {says}')
    assert apps.read_namespaced_deployment("app", "staging").metadata.generation == 1
    with KubeApiServer(tokens={"t"}) as api, pytest.raises(ValueError, match="may not be 0"):
        api.add_deployment("staging", "app", image=A, max_surge="0%", max_unavailable=0)


# -- 2. ReplicaSets and revisions ------------------------------------------------------------------------------
def test_each_pod_template_has_a_replica_set_named_by_its_hash_and_a_revision(api, apps):
    (first,) = api.replica_sets("staging", "app")
    assert first["revision"] == 1 and first["name"].startswith("app-") and len(first["name"]) == len("app-") + 10
    assert first["template"]["metadata"]["labels"] == {"app": "app", "pod-template-hash": first["name"][4:]}
    assert {p.replica_set for p in api.pods("staging", "app")} == {first["name"]}
    assert api.deployments[("staging", "app")]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"

    patch_image(apps, B, cause="to b")
    assert api.wait_for(rolled_out(api))

    old, new = api.replica_sets("staging", "app")
    assert old["name"] == first["name"] and (old["replicas"], new["replicas"], new["ready"]) == (0, 2, 2)
    assert new["revision"] == 2 and new["template"]["spec"]["containers"][0]["image"] == B
    assert {p.replica_set for p in api.pods("staging", "app")} == {new["name"]}
    deployment = apps.read_namespaced_deployment("app", "staging")
    assert deployment.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert {c.type: c.message for c in deployment.status.conditions}["Progressing"] == \
        f'ReplicaSet "{new["name"]}" has successfully progressed.'


def test_a_new_replica_set_is_announced_by_its_name(api, apps):
    version = patch_image(apps, B).metadata.resource_version

    for event in watch.Watch().stream(apps.list_namespaced_deployment, "staging", field_selector="metadata.name=app",
                                      resource_version=version, timeout_seconds=5):
        first = {c.type: c for c in event["object"].status.conditions}["Progressing"]
        break

    new = api.replica_sets("staging", "app")[-1]["name"]
    assert (first.reason, first.message) == ("NewReplicaSetCreated", f'Created new replica set "{new}"')


def test_a_rollback_reuses_the_old_replica_set_with_the_next_revision_and_its_history(api, apps):
    (original,) = api.replica_sets("staging", "app")
    patch_image(apps, B, cause="to b")
    assert api.wait_for(rolled_out(api))
    patch_image(apps, A, cause="back to a")
    assert api.wait_for(rolled_out(api))
    patch_image(apps, B, cause="b again")
    assert api.wait_for(rolled_out(api))

    a, b = api.replica_sets("staging", "app")  # no third ReplicaSet: each template has one
    assert (a["name"], a["revision"], a["annotations"]["deployment.kubernetes.io/revision-history"]) == \
        (original["name"], 3, "1")
    assert (b["revision"], b["annotations"]["deployment.kubernetes.io/revision-history"]) == (4, "2")
    assert api.history("staging", "app") == [(3, "back to a"), (4, "b again")]
    assert api.deployments[("staging", "app")]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
    assert {p.replica_set for p in api.pods("staging", "app")} == {b["name"]}


def test_the_deployments_annotations_are_copied_onto_its_new_replica_set_only(api, apps):
    patch_image(apps, B, "to b", team="ml", **{"kubectl.kubernetes.io/last-applied-configuration": "{}"})
    assert api.wait_for(rolled_out(api))
    apps.patch_namespaced_deployment("app", "staging", {"metadata": {"annotations": {
        CAUSE: "to b, noted later", "team": None}}}, _content_type=MERGE)

    assert api.wait_for(lambda: api.history("staging", "app")[-1][1] == "to b, noted later")  # a metadata change
    old, new = api.replica_sets("staging", "app")
    assert CAUSE not in old["annotations"] and "team" not in old["annotations"]
    assert new["annotations"]["team"] == "ml"  # a key the Deployment lost stays on the ReplicaSet
    assert "kubectl.kubernetes.io/last-applied-configuration" not in new["annotations"]
    assert new["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert api.history("staging", "app") == [(1, None), (2, "to b, noted later")]


def test_old_replica_sets_beyond_the_revision_history_limit_are_deleted_oldest_first():
    with KubeApiServer(tokens={"t"}) as api:
        api.add_deployment("staging", "app", image=A, revision_history_limit=1,
                           annotations={CAUSE: "infra"})
        apps = client.AppsV1Api(api.api_client())
        assert api.history("staging", "app") == [(1, "infra")]
        for image, cause in [(B, "b"), (C, "c")]:
            patch_image(apps, image, cause=cause)
            assert api.wait_for(rolled_out(api))

        assert api.wait_for(lambda: len(api.replica_sets("staging", "app")) == 2)
        assert api.history("staging", "app") == [(2, "b"), (3, "c")]


# -- 3. RBAC ---------------------------------------------------------------------------------------------------
@pytest.fixture
def rbac(api: KubeApiServer) -> KubeApiServer:
    api.tokens.add("sa")
    api.rules["sa"] = [("get", "deployments", "app"), ("list", "deployments", "app"),
                       ("get", "services/proxy", "app:http")]
    api.users["sa"] = "system:serviceaccount:ns:sa"
    return api


def test_a_request_no_rule_allows_is_the_real_403(rbac):
    apps = client.AppsV1Api(rbac.api_client("sa"))
    assert apps.read_namespaced_deployment("app", "staging").metadata.name == "app"

    code, body = refusal(lambda: patch_image(apps, B))

    assert code == 403
    assert body == ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps '
                    '\\"app\\" is forbidden: User \\"system:serviceaccount:ns:sa\\" cannot patch resource '
                    '\\"deployments\\" in API group \\"apps\\" in the namespace \\"staging\\"","reason":"Forbidden",'
                    '"details":{"name":"app","group":"apps","kind":"deployments"},"code":403}')
    assert refusal(lambda: apps.read_namespaced_deployment("other", "staging"))[0] == 403  # another name
    assert rbac.image_of("staging", "app") == A
    assert [(r.verb, r.resource_name, r.status) for r in rbac.requests if r.authorization == "Bearer sa"] == \
        [("get", "app", 200), ("patch", "app", 403), ("get", "other", 403)]


def test_a_list_or_watch_is_authorized_by_the_name_its_field_selector_pins(rbac):
    apps = client.AppsV1Api(rbac.api_client("sa"))
    who = 'User "system:serviceaccount:ns:sa" cannot'
    where = 'in API group "apps" in the namespace "staging"'

    listed = apps.list_namespaced_deployment("staging", field_selector="metadata.name=app")
    unnamed = json.loads(refusal(lambda: apps.list_namespaced_deployment("staging"))[1])
    other = json.loads(refusal(lambda: apps.list_namespaced_deployment("staging",
                                                                       field_selector="metadata.name=other"))[1])
    watched = json.loads(refusal(lambda: next(watch.Watch().stream(
        apps.list_namespaced_deployment, "staging", field_selector="metadata.name=app", timeout_seconds=1)))[1])
    unnamed_watch = json.loads(refusal(lambda: next(watch.Watch().stream(
        apps.list_namespaced_deployment, "staging", timeout_seconds=1)))[1])

    assert [d.metadata.name for d in listed.items] == ["app"]
    assert unnamed["message"] == f'deployments.apps is forbidden: {who} list resource "deployments" {where}'
    assert unnamed["details"] == {"group": "apps", "kind": "deployments"}
    assert other["message"] == f'deployments.apps "other" is forbidden: {who} list resource "deployments" {where}'
    assert other["details"] == {"name": "other", "group": "apps", "kind": "deployments"}
    assert watched["message"] == f'deployments.apps "app" is forbidden: {who} watch resource "deployments" {where}'
    assert unnamed_watch["message"] == f'deployments.apps is forbidden: {who} watch resource "deployments" {where}'
    assert {(r.verb, r.name, r.resource_name) for r in rbac.requests if r.status == 403} == {
        ("list", "", ""), ("list", "", "other"), ("watch", "", "app"), ("watch", "", "")}


def test_the_service_proxy_is_authorized_by_the_id_exactly_as_the_url_names_it(rbac):
    rbac.versions[A] = {"release_id": "r-a"}
    core = client.CoreV1Api(rbac.api_client("sa"))

    assert version_through(core, "app:http") == {"release_id": "r-a"}
    for same_port in ("app:80", "http:app:http"):
        code, body = refusal(lambda: version_through(core, same_port))
        assert code == 403 and json.loads(body) == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'services "{same_port}" is forbidden: User "system:serviceaccount:ns:sa" cannot get resource '
                       '"services/proxy" in API group "" in the namespace "staging"',
            "reason": "Forbidden", "details": {"name": same_port, "kind": "services"}, "code": 403}


def test_an_unknown_token_is_401_before_any_rule_and_a_token_without_rules_may_do_anything(rbac):
    code, body = refusal(lambda: client.AppsV1Api(rbac.api_client("sa-typo")).read_namespaced_deployment(
        "app", "staging"))

    assert (code, json.loads(body)) == (401, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                              "status": "Failure", "message": "Unauthorized",
                                              "reason": "Unauthorized", "code": 401})
    assert patch_image(client.AppsV1Api(rbac.api_client("t")), B).metadata.generation == 2


def test_the_default_user_is_the_deployers_service_account():
    with KubeApiServer(tokens={"t"}, rules={"t": []}) as api:
        api.add_deployment("staging", "app", image=A)
        body = json.loads(refusal(lambda: client.AppsV1Api(api.api_client()).read_namespaced_deployment(
            "app", "staging"))[1])
    assert 'User "system:serviceaccount:shipbot:deployer" cannot get' in body["message"]


# -- 4. the service proxy's own errors -------------------------------------------------------------------------
@pytest.fixture
def services(api: KubeApiServer) -> client.CoreV1Api:
    api.versions[A] = {"release_id": "r-a"}
    api.add_service("staging", "lonely", selector={"app": "nobody"})
    api.add_service("staging", "plain", selector={"app": "app"}, port=8080, port_name=None)
    api.add_service("staging", "multi", selector={"app": "app"},
                    ports=[{"name": "http", "port": 80, "targetPort": 5001}, {"name": "metrics", "port": 9090,
                                                                               "targetPort": 9090}])
    return client.CoreV1Api(api.api_client())


@pytest.mark.parametrize("id_", ["app:80", "app:http", "http:app:80", "https:app:http", "plain", "plain:",
                                 "plain:8080", "multi:metrics", "multi:9090"])
def test_the_service_proxy_reaches_a_ready_pod_by_any_form_of_its_id(services, id_):
    assert version_through(services, id_) == {"release_id": "r-a"}


@pytest.mark.parametrize(("id_", "code", "reason", "message", "details"), [
    ("a:b:c:d", 400, "BadRequest", 'invalid service request "a:b:c:d"', None),
    (":80", 400, "BadRequest", 'invalid service request ":80"', None),
    ("ftp:app:80", 400, "BadRequest", 'invalid service request "ftp:app:80"', None),
    ("missing:80", 404, "NotFound", 'services "missing" not found', {"name": "missing", "kind": "services"}),
    ("missing:http", 404, "NotFound", 'endpoints "missing" not found', {"name": "missing", "kind": "endpoints"}),
    ("missing", 404, "NotFound", 'endpoints "missing" not found', {"name": "missing", "kind": "endpoints"}),
    ("app:81", 503, "ServiceUnavailable", 'no service port 81 found for service "app"', None),
    ("app:web", 503, "ServiceUnavailable", 'no endpoints available for service "app:web"', None),
    ("https:app:web", 503, "ServiceUnavailable", 'no endpoints available for service "https:app:web"', None),
    ("app", 503, "ServiceUnavailable", 'no endpoints available for service "app"', None),  # its port has a name
    ("multi", 503, "ServiceUnavailable", 'no endpoints available for service "multi"', None),
    ("lonely:80", 503, "ServiceUnavailable", 'no endpoints available for service "lonely"', None),
    ("lonely:http", 503, "ServiceUnavailable", 'no endpoints available for service "lonely"', None),
])
def test_the_service_proxy_fails_as_the_real_one_does(services, id_, code, reason, message, details):
    status, body = refusal(lambda: services.connect_get_namespaced_service_proxy_with_path(id_, "staging", "version"))

    expected = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": reason, **({"details": details} if details else {}), "code": code}
    assert (status, json.loads(body)) == (code, expected)


def test_a_service_whose_pods_are_none_of_them_ready_has_no_endpoint_for_its_port(api, apps, services):
    api.behaviour[B] = "never"
    patch_image(apps, B)
    assert api.wait_for(timed_out(api))
    fresh = {"pod-template-hash": api.replica_sets("staging", "app")[-1]["name"].removeprefix("app-")}
    api.add_service("staging", "fresh", selector=fresh)  # selects only the new pod, which is not ready

    status, body = refusal(lambda: services.connect_get_namespaced_service_proxy_with_path("fresh:80", "staging",
                                                                                         "version"))

    assert (status, json.loads(body)["message"]) == (503, 'no endpoints available for service "fresh:80"')


# -- 5. a watch's timeoutSeconds -------------------------------------------------------------------------------
@pytest.mark.parametrize(("query", "seconds"), [({"timeoutSeconds": "45"}, 45), ({"timeoutSeconds": "3600"}, 3600),
                                                ({}, 1800), ({"timeoutSeconds": "0"}, 1800)])
def test_a_watch_lasts_its_timeout_seconds_without_a_cap_or_the_minimum_request_timeout(query, seconds):
    assert watch_timeout(query) == seconds


def test_a_timeout_seconds_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError):
        watch_timeout({"timeoutSeconds": "soon"})


def test_a_watch_ends_cleanly_when_its_timeout_passes(apps):
    version = apps.read_namespaced_deployment("app", "staging").metadata.resource_version
    started = time.monotonic()

    events = list(watch.Watch().stream(apps.list_namespaced_deployment, "staging", field_selector="metadata.name=app",
                                       resource_version=version, timeout_seconds=1))

    assert events == []  # nothing changed, and the stream ended with its terminating chunk, not an error
    assert 1.0 <= time.monotonic() - started < 2.0
