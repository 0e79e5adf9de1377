"""The engine wired by settings for Azure (SHIPBOT_TARGET=azure) takes a model to production: ACR Tasks builds
it, an ACR Task run smoke-tests it, Kubernetes rolls it out to staging, the nightly promotion imports it into the
production repository and rolls that out. Only what cannot run here is a fake, and each speaks its real
protocol to the real client: ARM for ACR Tasks (tests/fakes/arm_acr.py, whose runs really build and run on the
Docker engine, tests/fakes/arm_acr_docker.py), the Kubernetes API server (tests/fakes/kube_apiserver.py, which
answers /version for a pod with what the test says that image reports: the smoke test checked the real one),
and App Service's managed identity endpoint, where DefaultAzureCredential gets the token ARM checks. The ledger
and models are on Azurite and the registry is the local one (SHIPBOT_STORAGE_TARGET and
SHIPBOT_REGISTRY_TARGET=local: their Azure adapters run against OAuth Azurite and ACR's token exchange in
test_azure_storage_identity.py and test_acr_registry.py); the app's repository is a local git repository."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import httpx
import pytest
from azure.storage.blob import ContainerClient

from shared import jobs, operations, ports, wiring
from shared.adapters.azure import acr_tasks_builder, acr_task_smoke, kubernetes_deployer
from shared.releases import Status
from shared.settings import AZURITE, Settings
from stack.testing import eventually
from tests import localstack
from tests.fakes import arm_acr, arm_acr_docker, identity_endpoint
from tests.fakes.kube_apiserver import KubeApiServer

pytestmark = pytest.mark.integration
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
PLACEHOLDER = "mcr.microsoft.com/oss/kubernetes/pause:3.9"  # infra's image before the first release


def kubeconfig(api: KubeApiServer, folder: Path) -> str:
    path = folder / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: aks, cluster: {{server: "{api.url}", certificate-authority-data: {base64.b64encode(api.ca_pem).decode()}}}}}]
users: [{{name: shipbot, user: {{token: {next(iter(api.tokens))}}}}}]
contexts: [{{name: shipbot, context: {{cluster: aks, user: shipbot}}}}]
current-context: shipbot
""")
    return str(path)


@pytest.fixture
def cloud(tmp_path, monkeypatch):
    """The fakes, and the app settings a Function App in Azure would have, pointed at them."""
    name = f"azure-{uuid.uuid4().hex[:8]}"
    with identity_endpoint.IdentityEndpoint() as identity, KubeApiServer(tokens={"kube-token"}) as api, \
            arm_acr.FakeAcr(login_server=localstack.REGISTRY, token=identity_endpoint.SYSTEM_TOKEN) as acr:
        acr.outcome = arm_acr_docker.DockerExecutor(localstack.docker_client())
        identity_endpoint.use(monkeypatch, identity)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(acr.ca_file))  # azure-core trusts the fake ARM's certificate
        for namespace in ("staging", "production"):
            api.add_deployment(namespace, "app", image=PLACEHOLDER)
            api.add_service(namespace, "app")
        repo, _ = localstack.app_repository(tmp_path)
        env = {
            "SHIPBOT_TARGET": "azure", "SHIPBOT_ARM_ENDPOINT": acr.url,
            "SHIPBOT_REGISTRY_RESOURCE_ID": f"/subscriptions/{arm_acr.SUBSCRIPTION}/resourceGroups/"
                                            f"{arm_acr.RESOURCE_GROUP}/providers/Microsoft.ContainerRegistry/"
                                            f"registries/{arm_acr.REGISTRY}",
            "SHIPBOT_KUBECONFIG": kubeconfig(api, tmp_path), "SHIPBOT_PRODUCTION_PREFIX": "production",
            "SHIPBOT_GIT_REPO": str(repo),
            "SHIPBOT_STORAGE_TARGET": "local", "SHIPBOT_STORAGE": AZURITE,
            "SHIPBOT_MODELS_CONTAINER": f"models-{name}", "SHIPBOT_LEDGER_CONTAINER": f"ledger-{name}",
            "SHIPBOT_REGISTRY_TARGET": "local", "SHIPBOT_REGISTRY": localstack.REGISTRY,
            "SHIPBOT_REPOSITORY": f"shipbot-{name}/app",
        }
        models = ContainerClient.from_connection_string(AZURITE, env["SHIPBOT_MODELS_CONTAINER"])
        models.create_container()
        try:
            yield Settings.from_env(env), api, acr, models, identity
        finally:
            for container in (models, ContainerClient.from_connection_string(AZURITE, env["SHIPBOT_LEDGER_CONTAINER"])):
                if container.exists():
                    container.delete_container()


def upload(models: ContainerClient, folder: Path, version: str) -> None:
    for file in ("sample-request.json", "sample-response.json", "model.joblib"):  # the model file last
        with open(folder / file, "rb") as data:
            models.upload_blob(f"diabetes/{version}/{file}", data)


def reports(release) -> dict[str, str]:
    """The /version document of the release's image, as the smoke test checked it in a real container."""
    return {"release_id": release.id, "model_sha256": release.model.sha256, "git_commit": release.commit}


def test_a_model_upload_reaches_production_through_acr_tasks_and_kubernetes(cloud):
    settings, api, acr, models, identity = cloud
    engine = wiring.engine(settings)
    assert isinstance(engine.ports.builder, acr_tasks_builder.AcrTasksBuilder)
    assert isinstance(engine.ports.smoke, acr_task_smoke.AcrTaskSmokeRunner)
    assert isinstance(engine.ports.deployer.inner, kubernetes_deployer.KubernetesDeployer)
    upload(models, localstack.sample_model(), "1")

    planned = engine.reconcile(trigger="model diabetes/1 uploaded").release
    assert planned is not None and planned.status is Status.BUILDING and planned.build_id
    build = eventually(lambda: (b := engine.ports.builder.get_build(planned.build_id)).state
                       is not ports.BuildState.RUNNING and b, timeout=600, interval=1, what="the ACR build run")
    assert build.state is ports.BuildState.SUCCEEDED, build.error

    found = engine.reconcile(trigger="reconcile timer")  # what the timer does when ImagePushed was lost
    assert jobs.test(planned.id) in found.jobs
    built = engine.ledger.get_release(planned.id)
    assert (built.status, built.digest) == (Status.BUILT, build.digest)

    api.versions[built.ref] = reports(built)
    (rollout,) = engine.run(jobs.test(planned.id)).jobs  # the smoke test's ACR Task run
    assert (rollout.kind, rollout.environment) == ("rollout", "staging")
    engine.run(rollout)

    green = engine.ledger.get_release(planned.id)
    assert green.status is Status.GREEN, green.reason
    assert "smoke test passed" in [entry.what for entry in green.history]
    assert api.image_of("staging", "app") == built.ref
    assert engine.ledger.get_environment("staging").current.release_id == planned.id
    smoke_run = acr.last_run()
    assert smoke_run.kind == "EncodedTaskRunRequest" and smoke_run.status == "Succeeded"

    promoted = f"{localstack.REGISTRY}/production/{settings.repository}@{built.digest}"
    api.versions[promoted] = reports(built)
    engine.run(operations.promote(engine, by="nightly"))

    assert api.image_of("production", "app") == promoted
    production = engine.ledger.get_environment("production")
    assert (production.current.release_id, production.current.ref) == (planned.id, built.ref)
    tagged = httpx.head(f"http://{localstack.REGISTRY}/v2/production/{settings.repository}/manifests/{planned.id}",
                        headers={"Accept": MANIFEST_TYPES})
    assert tagged.headers.get("Docker-Content-Digest") == built.digest
    assert identity.seen and all(header == identity_endpoint.SECRET for _, _, header in identity.seen)
