"""The one wiring function: settings -> the engine with its adapters.

`SHIPBOT_TARGET` picks the adapters of every port at once, and `SHIPBOT_<PORT>_TARGET` overrides it for one:

    port       local                                  azure
    storage    BlobLedger, BlobModels on Azurite      the same on Azure Storage, Entra ID (no keys)
               (a connection string)                  (SHIPBOT_STORAGE is the account's blob URL)
    (models)   an application whose model_source is mlflow reads MlflowModels at SHIPBOT_MLFLOW_URI: the local
               stack's server, or an Azure ML workspace's (azureml://...) with the app's identity
    builder    DockerBuilder (the Docker engine)      AcrTasksBuilder (ACR Tasks)
    registry   DistributionRegistry                   AcrRegistry (ACR, Entra ID; promotion by import)
    smoke      DockerSmokeRunner (a container)        AcrTaskSmokeRunner (an ACR Task run)
    deployer   DockerDeployer (named containers)      KubernetesDeployer (AKS, or any cluster's kubeconfig)

The source follows from SHIPBOT_GIT_REPO: a path is a local git repository (GitSource), a GitHub URL GitHub's
API, an Azure Repos URL Azure DevOps'. SHIPBOT_PRODUCTION_PREFIX puts a PromotingDeployer in front of the
deployer. Adapters are imported here and only here, lazily, so that importing function_app.py stays cheap and
free of side effects, and a local app never loads the Azure management SDKs. Nothing here does I/O but what
an adapter's constructor does (the AKS path asks ARM for the cluster's server and CA).
"""

from __future__ import annotations

import functools
import os
import threading
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared import errors, evaluation, fleet, ports
from shared.bot import Bot
from shared.engine import Config, Engine
from shared.settings import Settings


def _repository(repo: str) -> str:
    """The app's repository as pushes name it: a local path as the post-receive hook sees it (symlinks resolved)."""
    return os.path.realpath(repo) if repo and not repo.startswith(("https://", "http://")) else repo


def bot(settings: Settings) -> Bot:
    """The fleet's bot: an engine per application, built on first use over one set of shared clients."""
    parts = _Parts(settings)
    return Bot(ledger=parts.ledger(""), default=fleet.single(settings), root=settings.app_name,
               engine_for=functools.partial(app_engine, settings, parts))


def engine(settings: Settings) -> Engine:
    """The engine of the one application the app settings describe (what a bot with no fleet file runs)."""
    return app_engine(settings, _Parts(settings), fleet.single(settings).apps[0])


def app_engine(settings: Settings, parts: _Parts, app: fleet.App) -> Engine:
    root = app.name == settings.app_name  # the settings' application: the ledger's root, the allow-list
    repository = f"{settings.registry}/{app.image}"
    config = Config(repository=repository, release_branch=app.source.branch if app.source else "main",
                    models=tuple(app.models), allowed_repositories=frozenset({repository} | (settings.allowed if root else set())),
                    max_build_attempts=settings.max_build_attempts,
                    source_repository=_repository(app.source.repository) if app.source else "",
                    chain=tuple(app.environments), app=app.name,
                    evaluate=evaluation.Spec.declared(app.evaluate) if app.evaluate is not None else None)
    return Engine(ports.Ports(
        ledger=parts.ledger("" if root else app.name), models=parts.models_of(app),
        source=source_for(app.source.repository, settings, parts) if app.source else None,
        builder=parts.builder, registry=parts.registry, smoke=parts.smoke, deployer=parts.deployer(app, root),
        notifier=parts.notifier, clock=lambda: datetime.now(UTC)), config)


class _Parts:
    """Builds each port's adapter for its target; the clients two adapters share (the Docker client, the Azure
    credential, the ACR Tasks client, the registry) are made once, on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clusters: dict[str, Any] = {}  # API clients of the clusters targets name besides the bot's own
        self._lock = threading.Lock()

    def pick(self, port: str) -> Any:
        return getattr(self, f"{self.settings.target_of(port)}_{port}")()

    # -- shared clients ---------------------------------------------------------------------------------------
    @functools.cached_property
    def docker(self) -> Any:
        import docker

        return docker.from_env(timeout=300)

    @functools.cached_property
    def credential(self) -> Any:
        from shared.adapters.azure import credentials

        return credentials.credential(managed_identity_client_id=self.settings.cloud.managed_identity_client_id)

    @functools.cached_property
    def acr(self) -> dict[str, str]:
        """The registry's subscription, resource group and name, from SHIPBOT_REGISTRY_RESOURCE_ID."""
        from shared.adapters.azure import acr_import

        resource_id = _required(self.settings.cloud.registry_resource_id, "REGISTRY_RESOURCE_ID",
                                "the container registry's ARM id, for ACR Tasks and promotion")
        match = acr_import.RESOURCE_ID_PATTERN.fullmatch(resource_id.rstrip("/"))
        if match is None:
            raise errors.PermanentError("SHIPBOT_REGISTRY_RESOURCE_ID is not /subscriptions/<id>/resourceGroups/"
                                        "<group>/providers/Microsoft.ContainerRegistry/registries/<name>")
        return {"subscription_id": match["subscription"], "resource_group": match["group"],
                "registry_name": match["name"]}

    @functools.cached_property
    def arm_endpoint(self) -> str | None:
        """Resource Manager's URL for every ARM client; None: the SDKs' default, the public cloud's."""
        return self.settings.cloud.arm_endpoint or None

    @functools.cached_property
    def arm_scopes(self) -> dict[str, Any]:
        """The token audience that goes with a non-default endpoint (the SDKs' default is the public cloud's)."""
        return {"credential_scopes": [f"{self.arm_endpoint}/.default"]} if self.arm_endpoint else {}

    @functools.cached_property
    def tasks_client(self) -> Any:
        from shared.adapters.azure import acr_runs

        return acr_runs.tasks_client(self.credential, self.acr["subscription_id"], endpoint=self.arm_endpoint,
                                     **self.arm_scopes)

    @functools.cached_property
    def registry(self) -> Any:
        return self.pick("registry")

    @functools.cached_property
    def builder(self) -> Any:
        return self.pick("builder")

    @functools.cached_property
    def smoke(self) -> Any:
        return self.pick("smoke")

    @functools.cached_property
    def notifier(self) -> Any:
        return notifier(self.settings)

    # -- storage ----------------------------------------------------------------------------------------------
    def _container(self, name: str) -> Any:
        from shared.adapters import blob_storage

        s = self.settings
        if s.target_of("storage") == "local":
            return blob_storage.container_from_connection_string(s.storage, name)
        from shared.adapters.azure import credentials

        return credentials.blob_container(s.storage, name, self.credential)

    @functools.cached_property
    def ledger_container(self) -> Any:
        return self._container(self.settings.ledger_container)

    def ledger(self, app: str) -> Any:
        """An application's ledger ("" : the container's root, the settings' application and the fleet)."""
        from shared.adapters import blob_ledger

        return blob_ledger.BlobLedger(container=self.ledger_container, app=app,
                                      lease_seconds=self.settings.lease_seconds)

    @functools.cached_property
    def models(self) -> Any:
        from shared.adapters import blob_models

        return blob_models.BlobModels(container=self._container(self.settings.models_container))

    def models_of(self, app: fleet.App) -> Any:
        """The application's model source: the models container, or the MLflow registry with its selector."""
        source = app.model_source
        if source.kind == "blob":
            return self.models
        from shared.adapters import mlflow_models

        return mlflow_models.MlflowModels(uri=self.mlflow_uri, client=self.mlflow_client, token=self.mlflow_token,
                                          selector=mlflow_models.Selector(alias=source.alias, stage=source.stage))

    @functools.cached_property
    def mlflow_uri(self) -> str:
        """The registry's REST base: an azureml:// tracking URI is Azure ML's https endpoint."""
        uri = self.settings.mlflow_uri
        return "https://" + uri.removeprefix("azureml://") if uri.startswith("azureml://") else uri

    @functools.cached_property
    def mlflow_client(self) -> Any:
        import httpx

        return httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))

    @functools.cached_property
    def mlflow_token(self) -> Any:
        """Azure ML's MLflow API takes an Entra ID token for Resource Manager; a plain server none."""
        if not self.settings.mlflow_uri.startswith("azureml://"):
            return None
        scope = f"{self.arm_endpoint or 'https://management.azure.com'}/.default"
        return lambda: self.credential.get_token(scope).token

    # -- builder, registry, smoke -----------------------------------------------------------------------------
    def local_builder(self) -> Any:
        from shared.adapters.local import docker_builder

        return docker_builder.DockerBuilder(client=self.docker, base_image=self.settings.base_image,
                                            log_dir=Path(self.settings.state) / "builds")

    def azure_builder(self) -> Any:
        from shared.adapters.azure import acr_tasks_builder

        return acr_tasks_builder.AcrTasksBuilder(client=self.tasks_client, resource_group=self.acr["resource_group"],
                                                 registry_name=self.acr["registry_name"],
                                                 login_server=self.settings.registry,
                                                 base_image=self.settings.base_image)

    def local_registry(self) -> Any:
        from shared.adapters.local import registry

        return registry.DistributionRegistry(host=self.settings.registry)

    def azure_registry(self) -> Any:
        from shared.adapters.azure import acr_import, acr_registry

        importer = (acr_import.ArmImageImport(credential=self.credential, arm_endpoint=self.arm_endpoint,
                                              **self.acr, **self.arm_scopes)
                    if self.settings.cloud.registry_resource_id else None)  # without it, promotion copies
        return acr_registry.AcrRegistry(host=self.settings.registry, credential=self.credential, importer=importer)

    def local_smoke(self) -> Any:
        from shared.adapters.local import smoke

        return smoke.DockerSmokeRunner(client=self.docker, budget_seconds=self.settings.smoke_seconds)

    def azure_smoke(self) -> Any:
        from shared.adapters.azure import acr_task_smoke

        return acr_task_smoke.AcrTaskSmokeRunner(client=self.tasks_client, resource_group=self.acr["resource_group"],
                                                 registry_name=self.acr["registry_name"],
                                                 budget_seconds=self.settings.smoke_seconds,
                                                 registry=self.registry, check_image=self.settings.base_image)

    # -- deployer ---------------------------------------------------------------------------------------------
    def deployer(self, app: fleet.App, root: bool) -> Any:
        """The application's environments, each on its target's deployer: local targets on the Docker engine,
        Kubernetes ones on the cluster; the last environment behind promotion when SHIPBOT_PRODUCTION_PREFIX
        is set."""
        kinds: dict[str, dict[str, Any]] = {}
        for env in app.environments:
            kinds.setdefault(env.target.kind, {})[env.name] = env.target
        made = {kind: getattr(self, f"{kind}_deployer")(app, targets, root) for kind, targets in kinds.items()}
        from shared.adapters import promoting

        inner = next(iter(made.values())) if len(made) == 1 else promoting.ByEnvironment(
            {name: made[kind] for kind, targets in kinds.items() for name in targets})
        if not self.settings.production_prefix:
            return inner
        from shared.adapters.azure import acr_registry

        promoter = (self.registry if self.settings.target_of("registry") == "azure"  # the local registry copies
                    else acr_registry.AcrRegistry(host=self.settings.registry, scheme="http"))
        return promoting.PromotingDeployer(inner, promoter, environment=app.environments[-1].name,
                                           prefix=self.settings.production_prefix)

    def local_deployer(self, app: fleet.App, targets: dict[str, Any], root: bool) -> Any:
        from shared.adapters.local import deployer

        s = self.settings
        prefix = s.environment_prefix if root else f"{s.environment_prefix}-{app.name}"
        return deployer.DockerDeployer(client=self.docker, ports={env: t.port for env, t in targets.items()},
                                       verify_seconds=s.verify_seconds, name_prefix=prefix)

    @functools.cached_property
    def kubernetes_api(self) -> Any:
        from shared.adapters.azure import aks_credentials

        cloud = self.settings.cloud
        if cloud.kubeconfig:
            return aks_credentials.kubeconfig_api_client(cloud.kubeconfig, context=cloud.kube_context or None)
        return self._aks_api(_required(cloud.aks_resource_id, "AKS_RESOURCE_ID",
                                       "the AKS cluster's ARM id (or SHIPBOT_KUBECONFIG for any other cluster)"))

    def _aks_api(self, resource_id: str) -> Any:
        """An AKS cluster's API client, by its ARM id: its server and CA from ARM, tokens from the identity."""
        from shared.adapters.azure import aks_credentials

        return aks_credentials.api_client(self.credential, **aks_credentials.parse_cluster_id(resource_id),
                                          **({"base_url": self.arm_endpoint} if self.arm_endpoint else {}),
                                          **self.arm_scopes)

    def cluster_api(self, cluster: str) -> Any:
        """The API client of the AKS cluster a target names by its ARM id ("": the bot's own), one per cluster."""
        if not cluster:
            return self.kubernetes_api
        with self._lock:
            if cluster not in self._clusters:
                self._clusters[cluster] = self._aks_api(cluster)
            return self._clusters[cluster]

    def kubernetes_deployer(self, app: fleet.App, targets: dict[str, Any], root: bool) -> Any:
        """A deployer per cluster the targets name; one environment's rollouts go to its own cluster."""
        from shared import contract
        from shared.adapters import promoting
        from shared.adapters.azure import kubernetes_deployer

        del app, root  # a Deployment is named by its target: nothing to derive from the application
        clusters: dict[str, dict[str, Any]] = {}
        for env, t in targets.items():
            clusters.setdefault(t.cluster, {})[env] = t
        made = {cluster: kubernetes_deployer.KubernetesDeployer(
            api_client=self.cluster_api(cluster),
            targets={env: kubernetes_deployer.Target(t.namespace, t.deployment, t.container, t.service)
                     for env, t in group.items()},
            contracts=functools.partial(contract.of_image, self.registry)) for cluster, group in clusters.items()}
        if len(made) == 1:
            return next(iter(made.values()))
        return promoting.ByEnvironment({env: made[t.cluster] for env, t in targets.items()})


def source_for(repo: str, settings: Settings, parts: _Parts) -> Any:
    """An application's repository, by its form: a path, a GitHub URL or an Azure Repos one."""
    if not repo.startswith(("https://", "http://")):
        from shared.adapters.local import git_source

        return git_source.GitSource(repo=Path(repo), source_url=f"file://{repo}")
    host = (urlsplit(repo).hostname or "").lower()
    if host == "dev.azure.com" or host.endswith(".visualstudio.com"):
        from shared.adapters.azure import azure_repos_source

        credential = None if settings.git_token else parts.credential
        return azure_repos_source.AzureReposSource(repository_url=repo, token=settings.git_token,
                                                   credential=credential)
    from shared.adapters.azure import github_source

    return github_source.GitHubSource(repository_url=repo, token=settings.git_token)


def notifier(settings: Settings) -> Any:
    from shared.adapters import notifiers

    return notifiers.WebhookNotifier(url=settings.notify_url) if settings.notify_url else notifiers.LogNotifier()


def _required(value: str, name: str, what: str) -> str:
    if not value:
        raise errors.PermanentError(f"SHIPBOT_{name} is not set: {what}")
    return value


logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every HTTP request at INFO


def build_ports(settings: Settings) -> ports.Ports:
    """The ports of the settings' application (tests and benchmarks take them apart)."""
    return engine(settings).ports
