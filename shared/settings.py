"""ShipBot's settings: the one place that reads the environment (`Settings.from_env(mapping)`), so tests pass a
dict. Every name is an app setting of the Function App (local.settings.json locally). Secrets are held here
and handed to whoever checks them; they are never part of a message or a repr.

Pure. No I/O beyond reading the mapping it is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared import errors, events

AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
           "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
           "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;")


TARGETS = ("local", "azure")
"""What SHIPBOT_TARGET and each SHIPBOT_<PORT>_TARGET may say. The ports they pick for: storage (the ledger and
the models), builder, registry, smoke, deployer. The source follows from the form of SHIPBOT_GIT_REPO (a path,
a GitHub URL or an Azure Repos URL), the notifier from SHIPBOT_NOTIFY_URL."""


@dataclass(frozen=True)
class Cloud:
    """Where the Azure adapters find their resources. Read only by ports whose target is `azure`."""

    registry_resource_id: str = ""
    """SHIPBOT_REGISTRY_RESOURCE_ID: the ACR's ARM id. ACR Tasks builds and smoke runs, and promotion by import."""
    aks_resource_id: str = ""
    """SHIPBOT_AKS_RESOURCE_ID: the AKS cluster's ARM id (server and CA from listClusterUserCredential)."""
    kubeconfig: str = ""
    """SHIPBOT_KUBECONFIG: a kubeconfig file for any other cluster, used instead of the AKS id when set."""
    kube_context: str = ""
    staging_namespace: str = "staging"
    production_namespace: str = "production"
    deployment: str = "app"
    """SHIPBOT_K8S_DEPLOYMENT: the Deployment of each environment's namespace; infra makes it, ShipBot patches it."""
    container: str = "model-api"
    """SHIPBOT_K8S_CONTAINER: the container of its pod template that runs the release."""
    service: str = "app:80"
    """SHIPBOT_K8S_SERVICE: `name:port` of the Service in front of it, for /version through the API server."""
    managed_identity_client_id: str = ""
    """A user-assigned identity's client id; empty: the app's system-assigned identity (what infra/bicep makes)."""
    arm_endpoint: str = ""
    """SHIPBOT_ARM_ENDPOINT: Azure Resource Manager. Empty: the public cloud's (https://management.azure.com);
    a sovereign cloud names its own (https://management.chinacloudapi.cn, https://management.usgovcloudapi.net)."""


@dataclass(frozen=True)
class Settings:
    app_name: str = "app"
    """SHIPBOT_APP_NAME: the application these settings describe when no fleet file is applied; its ledger is
    the container's root (the layout of a single-application ShipBot), every other application's `apps/<name>/`."""
    promotion_schedule: str = "0 0 2 * * *"
    """SHIPBOT_PROMOTION_SCHEDULE: when that application's production takes the newest release verified on
    staging (NCRONTAB, UTC); reconcile fires a slot that passed (within SHIPBOT_RECONCILE_SCHEDULE)."""
    target: str = "local"
    """`local` (Azurite, Docker engine, distribution registry) or `azure`: one switch for every port."""
    targets: tuple[tuple[str, str], ...] = ()
    """Per-port overrides of `target`, (port, target) pairs from SHIPBOT_<PORT>_TARGET: e.g. the local stack
    with a real cluster (SHIPBOT_DEPLOYER_TARGET=azure and SHIPBOT_KUBECONFIG)."""
    storage: str = field(default=AZURITE, repr=False)
    """SHIPBOT_STORAGE: connection string (local) or account URL (Azure, Entra ID auth). Default: Azurite."""
    models_container: str = "models"
    ledger_container: str = "ledger"
    git_repo: str = ""
    """SHIPBOT_GIT_REPO: the application's repository: a local path (git), `https://github.com/<owner>/<repo>`
    (or a GitHub Enterprise host) or `https://dev.azure.com/<org>/<project>/_git/<repo>`."""
    git_token: str = field(default="", repr=False)
    """SHIPBOT_GIT_TOKEN: read access to a private GitHub or Azure Repos repository (a secret). Empty: public
    GitHub, or Azure Repos with the app's identity."""
    release_branch: str = "main"
    registry: str = "127.0.0.1:5000"
    repository: str = "shipbot/app"
    """Path of the release images in the registry; images are `<registry>/<repository>@sha256:...`."""
    allowed_repositories: tuple[str, ...] = ()
    """Repository paths whose pushes are smoke-tested and deployed; ours is always in."""
    model_name: str | None = None
    """Which model the app ships; empty: the name of the most recently uploaded model."""
    model_source: str = "blob"
    """SHIPBOT_MODEL_SOURCE: where that application's models come from: `blob` (the models container) or
    `mlflow` (the model registry at SHIPBOT_MLFLOW_URI)."""
    model_alias: str = ""
    """SHIPBOT_MODEL_ALIAS (mlflow): release the version this alias points at (e.g. champion)."""
    model_stage: str = ""
    """SHIPBOT_MODEL_STAGE (mlflow): release the highest version in this stage (Staging, Production)."""
    mlflow_uri: str = "http://127.0.0.1:5050"
    """SHIPBOT_MLFLOW_URI: the MLflow model registry every `mlflow` application reads. Default: the local
    stack's server. An Azure ML workspace's is `azureml://<region>.api.azureml.ms/mlflow/v2.0/subscriptions/<id>/
    resourceGroups/<rg>/providers/Microsoft.MachineLearningServices/workspaces/<ws>` (its MLflow tracking URI),
    read with the app's identity."""
    mlflow_workspace: str = ""
    """SHIPBOT_MLFLOW_WORKSPACE: the Azure ML workspace's ARM id; ModelRegistered events from any other
    workspace are ignored. Empty: taken from SHIPBOT_MLFLOW_URI when it is an azureml:// URI, else any."""
    base_image: str = "python:3.11-slim"
    state: str = "/var/lib/shipbot"
    """SHIPBOT_STATE: the local stack's state directory (build logs, keys, daemons' data). Local only."""
    github_secret: str = field(default="", repr=False)
    azure_devops_secret: str = field(default="", repr=False)
    notify_url: str = field(default="", repr=False)
    """Incoming-webhook URL (Teams/Slack) for notifications; it is a secret. Empty: log only."""
    max_build_attempts: int = 3
    """A failed build is retried by reconcile this many times in all: enough for a flaky PyPI, not a loop."""
    smoke_seconds: float = 180.0
    """The smoke test's budget: a cold model_api image loads and warms up in ~5 s; ample for bigger models."""
    verify_seconds: float = 120.0
    lease_seconds: int = 60
    """SHIPBOT_LEASE_SECONDS (15-60, Azure's limits): how long a rollout's or a smoke test's ledger lease lasts
    (renewed every third of it while held), and so how soon another instance takes over the work of one that
    died. 60: the fewest renewals; the fault tests use 15."""
    environment_prefix: str = "shipbot"
    """Local environments are the containers `<prefix>-staging` and `<prefix>-production`."""
    staging_port: int = 8081
    production_port: int = 8080
    production_prefix: str = ""
    """SHIPBOT_PRODUCTION_PREFIX: promote before production runs an image: `<prefix>/<repository>@<digest>`
    in the same registry, imported (ACR) or copied with its digest kept. Empty: production runs the staging
    image itself. infra/bicep sets `production`, so that production pulls only what was promoted."""
    cloud: Cloud = Cloud()
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The mapping read, for the secrets a fleet file references by name (`secret`)."""

    def secret(self, reference: str) -> str:
        """The value of a fleet file's secret reference, `setting:NAME` (an app setting; "" when unset)."""
        if not reference.startswith("setting:"):
            raise errors.PermanentError("a secret reference is setting:NAME")
        return self.environ.get(reference.removeprefix("setting:"), "").strip()

    def target_of(self, port: str) -> str:
        """The adapter family of one port: its override, else SHIPBOT_TARGET."""
        return dict(self.targets).get(port, self.target)

    @property
    def workspace(self) -> str:
        """The Azure ML workspace whose ModelRegistered events count ("" : any)."""
        return self.mlflow_workspace or events.workspace_of(self.mlflow_uri)

    @property
    def repository_ref(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(f"{self.registry}/{r}" for r in (self.repository, *self.allowed_repositories))


    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str, default: str = "") -> str:
            return env.get(f"SHIPBOT_{name}", "").strip() or default

        def number(name: str, default: float, kind=float):
            text = get(name)
            try:
                value = kind(text) if text else default
            except ValueError:
                raise errors.PermanentError(f"SHIPBOT_{name} must be a number, not {text!r}") from None
            if value <= 0:
                raise errors.PermanentError(f"SHIPBOT_{name} must be positive")
            return value

        def one_of(name: str, default: str) -> str:
            value = get(name, default)
            if value not in TARGETS:
                raise errors.PermanentError(f"SHIPBOT_{name} must be local or azure, not {value!r}")
            return value

        target = one_of("TARGET", "local")
        source = _model_source(get("MODEL_SOURCE", "blob"))
        selector = _selector(source, get("MODEL_ALIAS"), get("MODEL_STAGE"))
        overrides = {"storage": one_of("STORAGE_TARGET", target), "builder": one_of("BUILDER_TARGET", target),
                     "registry": one_of("REGISTRY_TARGET", target), "smoke": one_of("SMOKE_TARGET", target),
                     "deployer": one_of("DEPLOYER_TARGET", target)}
        cloud = Cloud(
            registry_resource_id=get("REGISTRY_RESOURCE_ID"), aks_resource_id=get("AKS_RESOURCE_ID"),
            kubeconfig=get("KUBECONFIG"), kube_context=get("KUBE_CONTEXT"),
            staging_namespace=get("STAGING_NAMESPACE", "staging"),
            production_namespace=get("PRODUCTION_NAMESPACE", "production"),
            deployment=get("K8S_DEPLOYMENT", "app"), container=get("K8S_CONTAINER", "model-api"),
            service=get("K8S_SERVICE", "app:80"), managed_identity_client_id=get("MANAGED_IDENTITY_CLIENT_ID"),
            arm_endpoint=get("ARM_ENDPOINT").rstrip("/"),
        )
        return cls(
            app_name=get("APP_NAME", "app"), promotion_schedule=get("PROMOTION_SCHEDULE", "0 0 2 * * *"),
            target=target, targets=tuple((p, t) for p, t in overrides.items() if t != target),
            storage=get("STORAGE", AZURITE if overrides["storage"] == "local" else ""),
            models_container=get("MODELS_CONTAINER", "models"), ledger_container=get("LEDGER_CONTAINER", "ledger"),
            git_repo=get("GIT_REPO"), git_token=get("GIT_TOKEN"),
            release_branch=get("RELEASE_BRANCH", "main"), registry=get("REGISTRY", "127.0.0.1:5000"),
            repository=get("REPOSITORY", "shipbot/app"),
            allowed_repositories=tuple(r.strip() for r in get("ALLOWED_REPOSITORIES").split(",") if r.strip()),
            model_name=get("MODEL_NAME") or None, model_source=source,
            model_alias=selector[0], model_stage=selector[1],
            mlflow_uri=get("MLFLOW_URI", "http://127.0.0.1:5050").rstrip("/"), mlflow_workspace=get("MLFLOW_WORKSPACE"),
            base_image=get("BASE_IMAGE", "python:3.11-slim"),
            state=get("STATE", "/var/lib/shipbot"),
            github_secret=get("GITHUB_SECRET"), azure_devops_secret=get("AZURE_DEVOPS_SECRET"),
            notify_url=get("NOTIFY_URL"), max_build_attempts=number("MAX_BUILD_ATTEMPTS", 3, int),
            smoke_seconds=number("SMOKE_SECONDS", 180.0), verify_seconds=number("VERIFY_SECONDS", 120.0),
            lease_seconds=_lease(number("LEASE_SECONDS", 60, int)),
            environment_prefix=get("ENVIRONMENT_PREFIX", "shipbot"),
            staging_port=number("STAGING_PORT", 8081, int), production_port=number("PRODUCTION_PORT", 8080, int),
            production_prefix=get("PRODUCTION_PREFIX").strip("/"), cloud=cloud, environ=dict(env),
        )


def _lease(seconds: int) -> int:
    if not 15 <= seconds <= 60:
        raise errors.PermanentError(f"SHIPBOT_LEASE_SECONDS must be between 15 and 60 (Azure's limits for a blob "
                                    f"lease), not {seconds}")
    return seconds


def _model_source(value: str) -> str:
    if value not in ("blob", "mlflow"):
        raise errors.PermanentError(f"SHIPBOT_MODEL_SOURCE must be blob or mlflow, not {value!r}")
    return value


def _selector(source: str, alias: str, stage: str) -> tuple[str, str]:
    """SHIPBOT_MODEL_ALIAS and SHIPBOT_MODEL_STAGE, checked as a fleet file's model_source is."""
    if (alias or stage) and source != "mlflow":
        raise errors.PermanentError("SHIPBOT_MODEL_ALIAS and SHIPBOT_MODEL_STAGE go with SHIPBOT_MODEL_SOURCE=mlflow")
    if alias and stage:
        raise errors.PermanentError("set SHIPBOT_MODEL_ALIAS or SHIPBOT_MODEL_STAGE, not both")
    if stage and stage not in ("Staging", "Production"):
        raise errors.PermanentError(f"SHIPBOT_MODEL_STAGE must be Staging or Production, not {stage!r}")
    if alias and not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", alias):
        raise errors.PermanentError("SHIPBOT_MODEL_ALIAS is letters, digits, - and _")
    return alias, stage
