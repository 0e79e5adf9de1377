"""shared/wiring.py: which adapter each port gets for SHIPBOT_TARGET and its per-port overrides, built from
settings alone (no request is made: the cluster comes from a kubeconfig file, the Azure credential is never
asked for a token), and the clear errors for what Azure mode cannot do without."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import errors, fleet, wiring
from shared.adapters import blob_ledger, blob_models, promoting
from shared.adapters.azure import (acr_registry, acr_task_smoke, acr_tasks_builder, aks_credentials,
                                   azure_repos_source, github_source, kubernetes_deployer)
from shared.adapters.local import git_source, registry
from shared.settings import AZURITE, Settings

REGISTRY_ID = ("/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg-shipbot/providers/"
               "Microsoft.ContainerRegistry/registries/shipbotacr")
AKS_ID = ("/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg-aks/providers/"
          "Microsoft.ContainerService/managedClusters/shipbot-aks")
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: kube-token}}]
contexts: [{name: ctx, context: {cluster: c, user: u}}]
current-context: ctx
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return str(path)


@pytest.fixture
def azure(kubeconfig: str) -> dict[str, str]:
    """What infra/bicep sets, with a kubeconfig cluster in place of AKS."""
    return {"SHIPBOT_TARGET": "azure", "SHIPBOT_STORAGE": "https://shipbotdata.blob.core.windows.net/",
            "SHIPBOT_GIT_REPO": "https://github.com/contoso/scoring-app", "SHIPBOT_GIT_TOKEN": "ghp_s3cr3t",
            "SHIPBOT_REGISTRY": "shipbotacr.azurecr.io", "SHIPBOT_REGISTRY_RESOURCE_ID": REGISTRY_ID,
            "SHIPBOT_KUBECONFIG": kubeconfig, "SHIPBOT_STAGING_NAMESPACE": "stg", "SHIPBOT_PRODUCTION_NAMESPACE": "prd",
            "SHIPBOT_K8S_DEPLOYMENT": "scorer", "SHIPBOT_K8S_CONTAINER": "api", "SHIPBOT_K8S_SERVICE": "scorer:8080",
            "SHIPBOT_PRODUCTION_PREFIX": "production", "SHIPBOT_SMOKE_SECONDS": "90"}


def build(env: dict[str, str]):
    return wiring.build_ports(Settings.from_env(env))


def test_azure_target_wires_every_port_to_its_azure_adapter(azure):
    ports = build(azure)

    assert isinstance(ports.ledger, blob_ledger.BlobLedger) and isinstance(ports.models, blob_models.BlobModels)
    assert ports.ledger._container.url == "https://shipbotdata.blob.core.windows.net/ledger"
    assert ports.models._container.url == "https://shipbotdata.blob.core.windows.net/models"
    assert ports.ledger._container.credential is ports.registry._credential  # one credential, shared
    assert isinstance(ports.builder, acr_tasks_builder.AcrTasksBuilder)
    assert (ports.builder.resource_group, ports.builder.registry_name, ports.builder.login_server) == (
        "rg-shipbot", "shipbotacr", "shipbotacr.azurecr.io")
    assert isinstance(ports.smoke, acr_task_smoke.AcrTaskSmokeRunner)
    assert (ports.smoke.registry_name, ports.smoke.budget_seconds) == ("shipbotacr", 90.0)
    assert ports.smoke.client is ports.builder.client  # one ACR Tasks client
    assert isinstance(ports.registry, acr_registry.AcrRegistry) and ports.registry.host == "shipbotacr.azurecr.io"
    assert ports.registry._importer is not None  # promotion imports by ARM
    assert isinstance(ports.source, github_source.GitHubSource)


def test_production_is_promoted_in_the_registry_before_kubernetes_runs_it(azure):
    deployer = build(azure).deployer

    assert isinstance(deployer, promoting.PromotingDeployer)
    assert (deployer.environment, deployer.prefix) == ("production", "production")
    assert isinstance(deployer.inner, kubernetes_deployer.KubernetesDeployer)
    assert deployer.inner.targets == {
        "staging": kubernetes_deployer.Target("stg", "scorer", "api", "scorer:8080"),
        "production": kubernetes_deployer.Target("prd", "scorer", "api", "scorer:8080")}
    assert deployer.inner.api_client.configuration.host == "https://127.0.0.1:6443"


def test_without_a_production_prefix_production_runs_the_staging_image_itself(azure):
    azure.pop("SHIPBOT_PRODUCTION_PREFIX")

    assert isinstance(build(azure).deployer, kubernetes_deployer.KubernetesDeployer)


def test_an_aks_cluster_is_reached_through_its_resource_id(azure, kubeconfig, monkeypatch):
    azure.pop("SHIPBOT_KUBECONFIG")
    azure["SHIPBOT_AKS_RESOURCE_ID"] = AKS_ID
    asked: list[dict] = []

    def api_client(credential, **cluster):  # ARM's listClusterUserCredential: tests/unit/test_aks_credentials.py
        asked.append(cluster)
        return aks_credentials.kubeconfig_api_client(kubeconfig)

    monkeypatch.setattr(aks_credentials, "api_client", api_client)

    build(azure)

    assert asked == [{"subscription_id": "00000000-0000-0000-0000-0000000000aa", "resource_group": "rg-aks",
                      "cluster": "shipbot-aks"}]


@pytest.mark.parametrize(("repo", "adapter"), [
    ("https://github.com/contoso/scoring-app", github_source.GitHubSource),
    ("https://dev.azure.com/contoso/ml/_git/scoring-app", azure_repos_source.AzureReposSource),
    ("/srv/git/scoring-app.git", git_source.GitSource),
])
def test_the_source_follows_the_form_of_the_repository(azure, repo, adapter):
    azure["SHIPBOT_GIT_REPO"] = repo

    assert isinstance(build(azure).source, adapter)


def test_a_port_can_be_overridden_alone(azure):
    ports = build({**azure, "SHIPBOT_STORAGE_TARGET": "local", "SHIPBOT_STORAGE": AZURITE,
                   "SHIPBOT_REGISTRY_TARGET": "local", "SHIPBOT_REGISTRY": "127.0.0.1:5000"})

    assert ports.ledger._container.url == "http://127.0.0.1:10000/devstoreaccount1/ledger"  # Azurite, by key
    assert isinstance(ports.registry, registry.DistributionRegistry)
    assert isinstance(ports.builder, acr_tasks_builder.AcrTasksBuilder)  # the others stay azure
    assert isinstance(ports.deployer.promoter, acr_registry.AcrRegistry)  # the local registry promotes by copy
    assert ports.deployer.promoter.host == "127.0.0.1:5000" and ports.deployer.promoter._credential is None


@pytest.mark.parametrize(("drop", "names"), [
    ("SHIPBOT_REGISTRY_RESOURCE_ID", "SHIPBOT_REGISTRY_RESOURCE_ID"),
    ("SHIPBOT_KUBECONFIG", "SHIPBOT_AKS_RESOURCE_ID"),
    ("SHIPBOT_STORAGE", "storage account URL is empty"),
])
def test_azure_mode_without_a_setting_it_needs_says_which(azure, drop, names):
    azure.pop(drop)

    with pytest.raises(errors.PermanentError, match=names):
        build(azure)


def test_without_a_git_repository_the_application_takes_its_releases_from_image_pushes(azure):
    azure.pop("SHIPBOT_GIT_REPO")

    assert build(azure).source is None


def test_a_connection_string_in_azure_mode_is_refused_without_quoting_it(azure):
    key = AZURITE.split("AccountKey=")[1].split(";")[0]

    with pytest.raises(errors.PermanentError, match="connection string") as caught:
        build({**azure, "SHIPBOT_STORAGE": AZURITE})

    assert key not in str(caught.value)


@pytest.mark.parametrize("name", ["SHIPBOT_TARGET", "SHIPBOT_DEPLOYER_TARGET"])
def test_an_unknown_target_is_refused(azure, name):
    with pytest.raises(errors.PermanentError, match=f"{name} must be local or azure"):
        Settings.from_env({**azure, name: "gcp"})


def test_the_git_token_is_a_secret_no_repr_shows(azure):
    settings = Settings.from_env(azure)

    assert settings.git_token == "ghp_s3cr3t"
    assert "ghp_s3cr3t" not in repr(settings)


def test_a_target_on_another_cluster_is_rolled_out_there(azure, kubeconfig, monkeypatch):
    other = AKS_ID.replace("rg-aks", "rg-eu").replace("shipbot-aks", "eu-aks")
    asked: list[dict] = []

    def api_client(credential, **cluster):
        asked.append(cluster)
        return aks_credentials.kubeconfig_api_client(kubeconfig)

    monkeypatch.setattr(aks_credentials, "api_client", api_client)
    app = fleet.parse(f"""
apps:
  - name: churn
    image: shipbot/churn
    environments:
      - {{name: dev, target: {{kind: kubernetes, namespace: churn-dev, deployment: app}}, rule: on_green}}
      - {{name: eu, target: {{kind: kubernetes, namespace: churn, deployment: app, cluster: "{other}"}},
         rule: manual}}
""").apps[0]
    settings = Settings.from_env({**azure, "SHIPBOT_PRODUCTION_PREFIX": ""})
    engine = wiring.app_engine(settings, wiring._Parts(settings), app)

    deployer = engine.ports.deployer
    assert isinstance(deployer, promoting.ByEnvironment)
    assert deployer.deployers["dev"] is not deployer.deployers["eu"]
    assert deployer.deployers["dev"].targets["dev"].namespace == "churn-dev"
    assert set(deployer.deployers["eu"].targets) == {"eu"}
    assert asked == [{"subscription_id": "00000000-0000-0000-0000-0000000000aa", "resource_group": "rg-eu",
                      "cluster": "eu-aks"}]  # the bot's own cluster comes from SHIPBOT_KUBECONFIG here


def test_a_cluster_that_is_not_an_aks_id_is_refused():
    with pytest.raises(errors.InvalidEvent, match="cluster"):
        fleet.parse("""
apps:
  - name: churn
    image: shipbot/churn
    environments:
      - {name: dev, target: {kind: kubernetes, namespace: d, deployment: app, cluster: "https://eu.example"}, rule: on_green}
""")


def test_an_azure_ml_workspace_registry_is_called_over_https_with_a_resource_manager_token(azure):
    from shared.adapters import mlflow_models

    tracking = ("westeurope.api.azureml.ms/mlflow/v2.0/subscriptions/00000000-0000-0000-0000-0000000000aa/"
                "resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw")
    settings = Settings.from_env({**azure, "SHIPBOT_MODEL_SOURCE": "mlflow", "SHIPBOT_MODEL_ALIAS": "champion",
                                  "SHIPBOT_MLFLOW_URI": f"azureml://{tracking}"})
    parts = wiring._Parts(settings)
    scopes: list[str] = []
    parts.__dict__["credential"] = type("Credential", (), {"get_token": lambda self, scope: (
        scopes.append(scope), type("Token", (), {"token": "entra"})())[1]})()

    models = parts.models_of(fleet.single(settings).apps[0])

    assert isinstance(models, mlflow_models.MlflowModels)
    assert models.uri == f"https://{tracking}"
    assert models.selector == mlflow_models.Selector(alias="champion")
    assert models._token() == "entra"
    assert scopes == ["https://management.azure.com/.default"]


def test_the_ledger_leases_last_as_long_as_the_setting_says_within_azures_limits(azure):
    settings = Settings.from_env({**azure, "SHIPBOT_LEASE_SECONDS": "15"})

    assert wiring._Parts(settings).ledger("")._lease_seconds == 15
    assert Settings.from_env(azure).lease_seconds == 60
    for wrong in ("10", "61", "soon"):
        with pytest.raises(errors.PermanentError, match="SHIPBOT_LEASE_SECONDS must be"):
            Settings.from_env({**azure, "SHIPBOT_LEASE_SECONDS": wrong})
