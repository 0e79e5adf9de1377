"""ShipBot's settings: the one place that reads the environment (`Settings.from_env(mapping)`), so tests pass a
dict. Every name is an app setting of the Function App (local.settings.json locally). Secrets are held here
and handed to whoever checks them; they are never part of a message or a repr.

Pure. No I/O beyond reading the mapping it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from shared import errors

AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
           "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
           "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;")


@dataclass(frozen=True)
class Settings:
    target: str = "local"
    """`local` (Azurite, Docker engine, distribution registry) or `azure`: one switch for every port."""
    storage: str = field(default=AZURITE, repr=False)
    """SHIPBOT_STORAGE: connection string (local) or account URL (Azure, Entra ID auth). Default: Azurite."""
    models_container: str = "models"
    ledger_container: str = "ledger"
    git_repo: str = ""
    """SHIPBOT_GIT_REPO: the application's repository (a local path here)."""
    release_branch: str = "main"
    registry: str = "127.0.0.1:5000"
    repository: str = "shipbot/app"
    """Path of the release images in the registry; images are `<registry>/<repository>@sha256:...`."""
    allowed_repositories: tuple[str, ...] = ()
    """Repository paths whose pushes are smoke-tested and deployed; ours is always in."""
    model_name: str | None = None
    """Which model the app ships; empty: the name of the most recently uploaded model."""
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
    environment_prefix: str = "shipbot"
    """Local environments are the containers `<prefix>-staging` and `<prefix>-production`."""
    staging_port: int = 8081
    production_port: int = 8080
    stuck_minutes: float = 15.0
    """A release in flight with no news for this long is retried by reconcile: a lost event or job."""

    @property
    def repository_ref(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(f"{self.registry}/{r}" for r in (self.repository, *self.allowed_repositories))

    @property
    def stuck_after(self) -> timedelta:
        return timedelta(minutes=self.stuck_minutes)

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

        target = get("TARGET", "local")
        if target not in ("local", "azure"):
            raise errors.PermanentError(f"SHIPBOT_TARGET must be local or azure, not {target!r}")
        return cls(
            target=target, storage=get("STORAGE", AZURITE if target == "local" else ""),
            models_container=get("MODELS_CONTAINER", "models"), ledger_container=get("LEDGER_CONTAINER", "ledger"),
            git_repo=get("GIT_REPO"),
            release_branch=get("RELEASE_BRANCH", "main"), registry=get("REGISTRY", "127.0.0.1:5000"),
            repository=get("REPOSITORY", "shipbot/app"),
            allowed_repositories=tuple(r.strip() for r in get("ALLOWED_REPOSITORIES").split(",") if r.strip()),
            model_name=get("MODEL_NAME") or None, base_image=get("BASE_IMAGE", "python:3.11-slim"),
            state=get("STATE", "/var/lib/shipbot"),
            github_secret=get("GITHUB_SECRET"), azure_devops_secret=get("AZURE_DEVOPS_SECRET"),
            notify_url=get("NOTIFY_URL"), max_build_attempts=number("MAX_BUILD_ATTEMPTS", 3, int),
            smoke_seconds=number("SMOKE_SECONDS", 180.0), verify_seconds=number("VERIFY_SECONDS", 120.0),
            environment_prefix=get("ENVIRONMENT_PREFIX", "shipbot"),
            staging_port=number("STAGING_PORT", 8081, int), production_port=number("PRODUCTION_PORT", 8080, int),
            stuck_minutes=number("STUCK_MINUTES", 15.0),
        )
