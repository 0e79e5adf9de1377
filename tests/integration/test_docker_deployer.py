"""DockerDeployer on the real Docker engine: the environment's container, the rehearsal before the switch,
the no-op redeploy, and the rollback when the switched container fails its verification. Containers get a
test-only name prefix and free ports: the real shipbot-staging/production are never touched."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from shared import errors, ports
from shared.adapters.local import deployer as deployer_module
from shared.adapters.local.deployer import DockerDeployer
from tests import localstack

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SabotagedDeployer(DockerDeployer):
    """Gives the environment's container (not the rehearsal) of `sabotaged` a wrong RELEASE_ID, so that only
    the verification after the switch can catch it."""

    sabotaged = ""

    def _create(self, environment, ref, release_id, *, serving):
        saved = self.environment
        if serving and ref == self.sabotaged:
            self.environment = {**saved, "RELEASE_ID": "r-sabotaged"}
        try:
            return super()._create(environment, ref, release_id, serving=serving)
        finally:
            self.environment = saved


@pytest.fixture
def deployer():
    client = localstack.docker_client()
    prefix = f"shipbot-test-{uuid.uuid4().hex[:8]}"
    deployer = SabotagedDeployer(client=client, ports={"staging": free_port()}, verify_seconds=60,
                                 name_prefix=prefix, environment={"MODEL_API_WORKERS": "1"})
    yield deployer
    for container in client.containers.list(all=True, filters={"name": prefix}):
        container.remove(force=True)


def release(kind: str) -> tuple[str, ports.Expectation]:
    image = localstack.release_image(kind)
    return image.ref, ports.Expectation(image.release_id, model_sha256=image.model_sha256, commit=image.commit)


def serving(deployer: DockerDeployer) -> str:
    return httpx.get(f"{deployer.url('staging')}/version", timeout=5).json()["release_id"]


def containers_of(deployer: DockerDeployer) -> list:
    return deployer.client.containers.list(all=True, filters={"name": deployer.name_prefix})


def test_a_first_deploy_creates_the_environments_container_on_its_port(deployer):
    ref, expected = release("good")

    verdict = deployer.deploy("staging", ref, expected)

    assert verdict.passed, verdict.reason
    assert [name for name, _ in verdict.steps] == ["start", "ready", "verify", "switch"]
    assert serving(deployer) == expected.release_id
    (container,) = containers_of(deployer)  # the rehearsal is gone
    assert container.name == f"{deployer.name_prefix}-staging"
    assert container.labels["dev.shipbot.environment"] == "staging"
    assert container.labels["dev.shipbot.release"] == expected.release_id
    assert container.labels["dev.shipbot.ref"] == ref
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert container.attrs["HostConfig"]["PortBindings"]["5001/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(deployer.ports["staging"])}]


def test_a_second_deploy_switches_and_get_running_follows(deployer):
    first, second = release("good"), release("wrong-response")
    assert deployer.deploy("staging", *first).passed

    verdict = deployer.deploy("staging", *second)

    assert verdict.passed, verdict.reason
    assert deployer.get_running("staging") == second[0]
    assert serving(deployer) == second[1].release_id
    assert len(containers_of(deployer)) == 1


def test_a_release_that_fails_verification_never_replaces_the_serving_container(deployer):
    ref, expected = release("good")
    assert deployer.deploy("staging", ref, expected).passed
    before = deployer.client.containers.get(f"{deployer.name_prefix}-staging").id
    other_ref, _ = release("wrong-response")

    verdict = deployer.deploy("staging", other_ref, ports.Expectation("r-expected"))

    assert not verdict.passed
    assert verdict.reason.startswith("/version reports release ")
    assert verdict.reason.endswith(f"staging still runs {ref}")
    assert [name for name, _ in verdict.steps] == ["start", "ready", "verify"]
    assert deployer.client.containers.get(f"{deployer.name_prefix}-staging").id == before
    assert deployer.get_running("staging") == ref
    assert serving(deployer) == expected.release_id
    assert len(containers_of(deployer)) == 1


def test_a_release_that_never_gets_ready_leaves_the_old_one_serving(deployer):
    ref, expected = release("good")
    assert deployer.deploy("staging", ref, expected).passed

    verdict = deployer.deploy("staging", *release("bad-model"))

    assert not verdict.passed
    assert "model failed to load" in verdict.reason
    assert deployer.get_running("staging") == ref
    assert serving(deployer) == expected.release_id


def test_a_failed_verification_after_the_switch_rolls_back_to_the_previous_ref(deployer):
    first, second = release("good"), release("wrong-response")
    assert deployer.deploy("staging", *first).passed
    deployer.sabotaged = second[0]

    verdict = deployer.deploy("staging", *second)

    assert not verdict.passed
    assert verdict.reason.endswith(f"rolled back to {first[0]}")
    assert "/version reports release r-sabotaged" in verdict.reason
    assert [name for name, _ in verdict.steps] == ["start", "ready", "verify", "switch"]
    assert deployer.get_running("staging") == first[0]
    assert serving(deployer) == first[1].release_id


def test_deploying_the_ref_that_already_runs_verifies_it_without_a_restart(deployer):
    ref, expected = release("good")
    assert deployer.deploy("staging", ref, expected).passed
    before = deployer.client.containers.get(f"{deployer.name_prefix}-staging").id

    verdict = deployer.deploy("staging", ref, expected)

    assert verdict.passed
    assert [name for name, _ in verdict.steps] == ["verify"]
    assert deployer.client.containers.get(f"{deployer.name_prefix}-staging").id == before


def test_a_stopped_environment_runs_nothing(deployer):
    ref, expected = release("good")
    assert deployer.deploy("staging", ref, expected).passed

    deployer.client.containers.get(f"{deployer.name_prefix}-staging").stop(timeout=5)

    assert deployer.get_running("staging") is None


def test_an_unknown_environment_is_not_found(deployer):
    with pytest.raises(errors.NotFound, match="known: staging"):
        deployer.get_running("qa")
    with pytest.raises(errors.NotFound):
        deployer.url("qa")


def test_the_default_environments_are_staging_on_8081_and_production_on_8080():
    deployer = DockerDeployer(client=localstack.docker_client())
    assert (deployer.url("staging"), deployer.url("production")) == ("http://127.0.0.1:8081", "http://127.0.0.1:8080")
    assert deployer_module.DEFAULT_PORTS == {"staging": 8081, "production": 8080}


def test_a_switch_onto_a_port_that_something_else_holds_fails_and_leaves_nothing_behind(deployer):
    ref, expected = release("good")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", deployer.ports["staging"]))
        squatter.listen()

        verdict = deployer.deploy("staging", ref, expected)

    assert not verdict.passed
    assert "did not start" in verdict.reason
    assert verdict.reason.endswith("staging runs nothing now (there was nothing to roll back to)")
    assert deployer.get_running("staging") is None
    assert containers_of(deployer) == []
