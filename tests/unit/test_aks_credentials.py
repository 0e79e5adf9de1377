"""How KubernetesDeployer reaches a cluster: AKS through ARM's listClusterUserCredential (a fake ARM endpoint,
tests/fakes/aks_arm.py, that the real azure-mgmt-containerservice client calls over HTTPS) with Entra ID tokens
refreshed before they expire (a fake credential and an injected clock), or a kubeconfig for any cluster; both
end at the fake API server, which checks the bearer token of every request."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import yaml
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared import errors
from shared.adapters.azure import aks_credentials as aks
from shared.adapters.azure import kubernetes_deployer as kd
from tests.fakes.aks_arm import FakeArm
from tests.fakes.kube_apiserver import KubeApiServer

IMAGE = "registry.test/app@sha256:" + "a" * 64
ARM_SCOPE = "https://management.azure.com/.default"
TARGETS = {"staging": kd.Target.parse("staging/app/model-api@app:80")}
NOW = 1_700_000_000.0


class Tokens:
    """A TokenCredential whose tokens for `scope` are `<prefix>-1`, `<prefix>-2`... each living `lifetime`
    seconds of `clock`; records every request."""

    def __init__(self, clock, *, lifetime: float = 3600.0) -> None:
        self.clock, self.lifetime = clock, lifetime
        self.asked: list[str] = []
        self.fail: Exception | None = None

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        if self.fail is not None:
            raise self.fail
        self.asked.append(scopes[0])
        prefix = "aks" if scopes[0] == aks.AKS_SCOPE else "arm"
        count = sum(1 for s in self.asked if s == scopes[0])
        return AccessToken(f"{prefix}-{count}", int(self.clock() + self.lifetime))

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def kubeconfig(server: str, ca_pem: bytes | None, *, user: dict | None = None, current: str | None = "c1") -> str:
    cluster = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "aks", "cluster": cluster},
                        {"name": "other", "cluster": {"server": "https://other.example:443"}}],
           "contexts": [{"name": "c1", "context": {"cluster": "aks", "user": "u"}},
                        {"name": "c2", "context": {"cluster": "other", "user": "u"}}],
           "users": [{"name": "u", "user": user or {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                             "command": "kubelogin", "args": ["get-token"]}}}]}
    if current:
        doc["current-context"] = current
    return yaml.safe_dump(doc)


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer(tokens={"aks-1"}) as server:
        server.add_deployment("staging", "app", image=IMAGE)
        yield server


# -- token refresh ------------------------------------------------------------------------------------------
def test_a_token_is_asked_for_the_aks_server_application_and_reused_until_near_its_expiry():
    clock = Clock()
    credential = Tokens(clock)
    refresher = aks.TokenRefresher(credential, clock=clock)

    assert refresher.token() == "aks-1"
    clock.now += 3600 - aks.REFRESH_MARGIN_SECONDS - 1
    assert refresher.token() == "aks-1"
    clock.now += 2  # now within the margin before expiry
    assert refresher.token() == "aks-2"
    assert credential.asked == ["6dae42f8-4368-4678-94ff-3960e28e3630/.default"] * 2


def test_the_client_sends_the_refreshed_token_once_the_old_one_nears_expiry(api):
    clock = Clock()
    config = aks.configuration(aks.Cluster(api.url, api.ca_pem), Tokens(clock), clock=clock)
    from kubernetes import client

    deployer = kd.KubernetesDeployer(api_client=client.ApiClient(config), targets=TARGETS)
    assert deployer.get_running("staging") == IMAGE
    api.tokens = {"aks-2"}  # the cluster now only takes the next token
    clock.now += 3600 - aks.REFRESH_MARGIN_SECONDS + 1

    assert deployer.get_running("staging") == IMAGE
    assert [r.authorization for r in api.requests] == ["Bearer aks-1", "Bearer aks-2"]


def test_a_credential_that_cannot_authenticate_is_a_permanent_error():
    credential = Tokens(Clock())
    credential.fail = ClientAuthenticationError("no managed identity; secret=hunter2")

    with pytest.raises(errors.PermanentError) as caught:
        aks.TokenRefresher(credential).token()
    assert "hunter2" not in str(caught.value)


# -- AKS through ARM ------------------------------------------------------------------------------------------
def test_the_aks_path_takes_server_and_ca_from_arm_and_authenticates_with_entra_tokens(api):
    clock = Clock()
    credential = Tokens(clock)
    with FakeArm(token="arm-1") as arm:
        arm.kubeconfigs[("sub-1", "rg-1", "aks-1")] = kubeconfig(api.url, api.ca_pem)
        api_client = aks.api_client(credential, subscription_id="sub-1", resource_group="rg-1", cluster="aks-1",
                                    clock=clock, base_url=arm.url, connection_verify=arm.ca_file)

    deployer = kd.KubernetesDeployer(api_client=api_client, targets=TARGETS)
    assert deployer.get_running("staging") == IMAGE
    assert arm.requests[0]["method"] == "POST" and "api-version=" in arm.requests[0]["query"]
    assert arm.requests[0]["path"] == ("/subscriptions/sub-1/resourceGroups/rg-1/providers/"
                                       "Microsoft.ContainerService/managedClusters/aks-1/listClusterUserCredential")
    assert credential.asked == [ARM_SCOPE, aks.AKS_SCOPE]
    assert api.requests[-1].authorization == "Bearer aks-1"  # not the kubeconfig's exec user


def test_an_aks_cluster_arm_does_not_know_is_not_found():
    with FakeArm(token="arm-1") as arm, pytest.raises(errors.NotFound, match="rg-1/missing"):
        aks.aks_cluster(Tokens(Clock()), subscription_id="sub-1", resource_group="rg-1", cluster="missing",
                        base_url=arm.url, connection_verify=arm.ca_file)


def test_arm_refusing_the_token_is_a_permanent_error():
    with FakeArm(token="another") as arm:
        arm.kubeconfigs[("sub-1", "rg-1", "aks-1")] = kubeconfig("https://aks.example:443", None)
        with pytest.raises(errors.PermanentError, match="AKS Cluster User"):
            aks.aks_cluster(Tokens(Clock()), subscription_id="sub-1", resource_group="rg-1", cluster="aks-1",
                            base_url=arm.url, connection_verify=arm.ca_file, retry_total=0)


def test_the_cluster_resource_id_names_subscription_group_and_cluster():
    resource_id = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ContainerService/managedClusters/aks-1"
    assert aks.parse_cluster_id(resource_id) == {"subscription_id": "sub-1", "resource_group": "rg-1",
                                                 "cluster": "aks-1"}


@pytest.mark.parametrize("resource_id", [
    "", "/subscriptions/sub-1/resourceGroups/rg-1",
    "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ContainerRegistry/registries/acr",
    "/subscriptions//resourceGroups/rg-1/providers/Microsoft.ContainerService/managedClusters/aks-1",
])
def test_a_resource_id_of_something_else_is_refused(resource_id):
    with pytest.raises(errors.PermanentError, match="managedClusters/<name>"):
        aks.parse_cluster_id(resource_id)


# -- kubeconfigs --------------------------------------------------------------------------------------------
def test_a_kubeconfig_gives_the_current_contexts_server_and_ca():
    cluster = aks.parse_kubeconfig(kubeconfig("https://aks.example:443/", b"-----BEGIN CERTIFICATE-----\n"))

    assert cluster == aks.Cluster("https://aks.example:443", b"-----BEGIN CERTIFICATE-----\n")


def test_a_named_context_picks_its_cluster():
    assert aks.parse_kubeconfig(kubeconfig("https://aks.example", None), context="c2").server == \
        "https://other.example:443"


@pytest.mark.parametrize(("text", "context", "match"), [
    (kubeconfig("https://aks.example", None), "nope", "no context 'nope'"),
    (kubeconfig("http://aks.example", None), None, "no https:// server"),
    (kubeconfig("https://aks.example", None, current=None), None, "more than one cluster"),
    ("clusters: [", None, "not YAML"),
    ("just text", None, "not a kubeconfig"),
])
def test_a_kubeconfig_that_cannot_serve_is_refused_without_quoting_it(text, context, match):
    secret = "s3cret-token"
    text = text.replace("kubelogin", secret)
    with pytest.raises(errors.PermanentError, match=match) as caught:
        aks.parse_kubeconfig(text, context=context)
    assert secret not in str(caught.value)


def test_any_cluster_is_reached_through_a_kubeconfig_file_with_its_own_user(api, tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(api.url, api.ca_pem, user={"token": "aks-1"}))

    deployer = kd.KubernetesDeployer(api_client=aks.kubeconfig_api_client(str(path)), targets=TARGETS)

    assert deployer.get_running("staging") == IMAGE
    assert api.requests[-1].authorization == "Bearer aks-1"


def test_a_missing_kubeconfig_file_is_a_permanent_error(tmp_path):
    with pytest.raises(errors.PermanentError, match="cannot use the kubeconfig"):
        aks.kubeconfig_api_client(str(tmp_path / "absent"))
