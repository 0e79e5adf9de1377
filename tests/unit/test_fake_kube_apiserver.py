"""The fake API server behaves as the real one does where KubernetesDeployer relies on it: the wire shapes
deserialize into the client's own models, generation moves with the spec only, resourceVersion preconditions
conflict, watches stream one Deployment's events, the service proxy needs a ready endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.fakes.kube_apiserver import KubeApiServer, strategic_merge

A, B = (f"registry.test/app@sha256:{c * 64}" for c in "ab")
MERGE = "application/strategic-merge-patch+json"


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
