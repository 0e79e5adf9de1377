"""The one wiring function: settings -> the engine with its adapters.

`SHIPBOT_TARGET` picks the adapters for every port at once (`local`: Azurite, the Docker engine, the
distribution registry; `azure`: Azure Storage with Entra ID, ACR Tasks, ACR, AKS). Adapters are imported
here and only here, lazily, so that importing function_app.py stays cheap and free of side effects.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from shared import errors, ports
from shared.engine import Config, Engine
from shared.settings import Settings


def engine(settings: Settings) -> Engine:
    config = Config(repository=settings.repository_ref, release_branch=settings.release_branch,
                    model_name=settings.model_name, allowed_repositories=settings.allowed,
                    max_build_attempts=settings.max_build_attempts, stuck_after=settings.stuck_after)
    if settings.target == "local":
        return Engine(local_ports(settings), config)
    raise errors.PermanentError(f"SHIPBOT_TARGET={settings.target} has no adapters yet")


def local_ports(settings: Settings) -> ports.Ports:
    import docker

    from shared.adapters import blob_ledger, blob_models, notifiers
    from shared.adapters.local import deployer, docker_builder, git_source, registry, smoke

    if not settings.git_repo:
        raise errors.PermanentError("SHIPBOT_GIT_REPO is not set: the application's git repository")
    client = docker.from_env(timeout=300)
    notifier = (notifiers.WebhookNotifier(url=settings.notify_url) if settings.notify_url
                else notifiers.LogNotifier())
    return ports.Ports(
        ledger=blob_ledger.BlobLedger.from_connection_string(settings.storage, settings.ledger_container),
        source=git_source.GitSource(repo=Path(settings.git_repo), source_url=f"file://{settings.git_repo}"),
        models=blob_models.BlobModels.from_connection_string(settings.storage, settings.models_container),
        builder=docker_builder.DockerBuilder(client=client, base_image=settings.base_image,
                                             log_dir=Path(settings.state) / "builds"),
        registry=registry.DistributionRegistry(host=settings.registry),
        smoke=smoke.DockerSmokeRunner(client=client, budget_seconds=settings.smoke_seconds),
        deployer=deployer.DockerDeployer(client=client, ports={"staging": settings.staging_port,
                                                               "production": settings.production_port},
                                         verify_seconds=settings.verify_seconds,
                                         name_prefix=settings.environment_prefix),
        notifier=notifier,
        clock=lambda: datetime.now(UTC),
    )


logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every HTTP request at INFO
