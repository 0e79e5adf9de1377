"""The one wiring function: settings -> the engine with its adapters.

`SHIPBOT_TARGET` picks the adapters of every port at once, and `SHIPBOT_<PORT>_TARGET` overrides it for one:

    port       local                                  azure
    storage    BlobLedger, BlobModels on Azurite      the same on Azure Storage, Entra ID (no keys)
               (a connection string)                  (SHIPBOT_STORAGE is the account's blob URL)
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
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared import errors, ports
from shared.engine import Config, Engine
from shared.settings import Settings


def _repository(repo: str) -> str:
    """The app's repository as pushes name it: a local path as the post-receive hook sees it (symlinks resolved)."""
    return os.path.realpath(repo) if repo and not repo.startswith(("https://", "http://")) else repo


def engine(settings: Settings) -> Engine:
    config = Config(repository=settings.repository_ref, release_branch=settings.release_branch,
                    model_name=settings.model_name, allowed_repositories=settings.allowed,
                    max_build_attempts=settings.max_build_attempts, source_repository=_repository(settings.git_repo))
    return Engine(build_ports(settings), config)


def build_ports(settings: Settings) -> ports.Ports:
    parts = _Parts(settings)
    ledger, models = parts.storage()
    return ports.Ports(ledger=ledger, models=models, source=source(settings, parts),
                       builder=parts.pick("builder"), registry=parts.registry, smoke=parts.pick("smoke"),
                       deployer=parts.deployer(), notifier=notifier(settings),
                       clock=lambda: datetime.now(UTC))


class _Parts:
    """Builds each port's adapter for its target; the clients two adapters share (the Docker client, the Azure
    credential, the ACR Tasks client, the registry) are made once, on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

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

    # -- storage ----------------------------------------------------------------------------------------------
    def storage(self) -> tuple[Any, Any]:
        from shared.adapters import blob_ledger, blob_models

        s = self.settings
        if s.target_of("storage") == "local":
            return (blob_ledger.BlobLedger.from_connection_string(s.storage, s.ledger_container),
                    blob_models.BlobModels.from_connection_string(s.storage, s.models_container))
        from shared.adapters.azure import credentials

        return (blob_ledger.BlobLedger(container=credentials.blob_container(s.storage, s.ledger_container,
                                                                            self.credential)),
                blob_models.BlobModels(container=credentials.blob_container(s.storage, s.models_container,
                                                                            self.credential)))

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
    def deployer(self) -> Any:
        inner = self.pick("deployer")
        if not self.settings.production_prefix:
            return inner
        from shared.adapters import promoting
        from shared.adapters.azure import acr_registry

        promoter = (self.registry if self.settings.target_of("registry") == "azure"  # the local registry copies
                    else acr_registry.AcrRegistry(host=self.settings.registry, scheme="http"))
        return promoting.PromotingDeployer(inner, promoter, environment="production",
                                           prefix=self.settings.production_prefix)

    def local_deployer(self) -> Any:
        from shared.adapters.local import deployer

        s = self.settings
        return deployer.DockerDeployer(client=self.docker, ports={"staging": s.staging_port,
                                                                  "production": s.production_port},
                                       verify_seconds=s.verify_seconds, name_prefix=s.environment_prefix)

    def azure_deployer(self) -> Any:
        from shared.adapters.azure import aks_credentials, kubernetes_deployer

        cloud = self.settings.cloud
        if cloud.kubeconfig:
            api_client = aks_credentials.kubeconfig_api_client(cloud.kubeconfig, context=cloud.kube_context or None)
        else:
            resource_id = _required(cloud.aks_resource_id, "AKS_RESOURCE_ID",
                                    "the AKS cluster's ARM id (or SHIPBOT_KUBECONFIG for any other cluster)")
            api_client = aks_credentials.api_client(self.credential, **aks_credentials.parse_cluster_id(resource_id),
                                                    **({"base_url": self.arm_endpoint} if self.arm_endpoint else {}),
                                                    **self.arm_scopes)
        targets = {env: kubernetes_deployer.Target(namespace, cloud.deployment, cloud.container, cloud.service)
                   for env, namespace in (("staging", cloud.staging_namespace),
                                          ("production", cloud.production_namespace))}
        from shared import contract

        return kubernetes_deployer.KubernetesDeployer(api_client=api_client, targets=targets,
                                                      contracts=functools.partial(contract.of_image, self.registry))


def source(settings: Settings, parts: _Parts) -> Any:
    """The application's repository, by the form of SHIPBOT_GIT_REPO."""
    repo = _required(settings.git_repo, "GIT_REPO", "the application's git repository")
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
