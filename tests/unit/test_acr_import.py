"""ArmImageImport: the real azure-mgmt-containerregistry client over HTTPS to the fake ARM endpoint
(tests/fakes/arm_registry.py): the request it sends, the long-running operation it polls, how failures map.
Operations that would copy an image fail before touching a registry here; the copies themselves are in
tests/integration/test_acr_registry.py."""

from __future__ import annotations

import pytest

from shared import errors
from shared.adapters.azure.acr_import import ArmImageImport
from tests.fakes import arm_registry, selfsigned
from tests.fakes.static_token import StaticToken

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return selfsigned.make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def arm(certificate):
    state = arm_registry.FakeArm(token="arm-token", registries={"shipbotacr": "127.0.0.1:9"}, polls=2)
    with selfsigned.https_server(arm_registry.ArmHandler, *certificate, arm=state) as server:
        state.url = f"https://127.0.0.1:{server.server_address[1]}"
        yield state


def importer(arm, certificate, *, token: str = "arm-token", registry: str = "shipbotacr", **options):
    return ArmImageImport(subscription_id=SUBSCRIPTION, resource_group="rg-shipbot", registry_name=registry,
                          credential=StaticToken(token), arm_endpoint=arm.url, polling_seconds=0,
                          connection_verify=str(certificate[0]), retry_total=0, **options)


def test_a_failed_import_operation_is_permanent_with_arms_error_code_after_polling_it(arm, certificate):
    arm.fail_next = {"code": "InvalidParameters", "message": "source image shipbot/app@sha256:ab... not found"}

    with pytest.raises(errors.PermanentError, match="InvalidParameters") as caught:
        importer(arm, certificate).import_image(source_host=None, source_repository="shipbot/app", digest=DIGEST,
                                                target_repository="shipbot/app-prod", tag="r-1", force=False)

    statuses = [path for method, path, _, _ in arm.requests if "operationStatuses" in path]
    assert len(statuses) == arm.polls + 1  # InProgress twice, then Failed
    assert "arm-token" not in str(caught.value)


def test_a_failed_import_is_permanent_also_when_arm_is_polled_by_location(arm, certificate):
    arm.async_operation = False
    arm.fail_next = {"code": "InvalidParameters", "message": "source image not found"}

    with pytest.raises(errors.PermanentError, match="InvalidParameters"):
        importer(arm, certificate).import_image(source_host=None, source_repository="shipbot/app", digest=DIGEST,
                                                target_repository="shipbot/app-prod", tag="r-1", force=False)

    assert len([path for method, path, _, _ in arm.requests if "operationResults" in path]) == arm.polls + 1


def test_the_request_names_the_source_by_resource_id_the_digest_the_target_tag_and_the_mode(arm, certificate):
    arm.fail_next = {"code": "Stop", "message": "recorded only"}

    with pytest.raises(errors.PermanentError):
        importer(arm, certificate).import_image(source_host=None, source_repository="shipbot/app", digest=DIGEST,
                                                target_repository="shipbot/app-prod", tag="r-1", force=True)

    method, path, query, body = arm.requests[0]
    assert (method, query["api-version"]) == ("POST", "2025-11-01")
    assert path == (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-shipbot/providers/"
                    "Microsoft.ContainerRegistry/registries/shipbotacr/importImage")
    assert body == {"source": {"resourceId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-shipbot/providers/"
                                             "Microsoft.ContainerRegistry/registries/shipbotacr",
                               "sourceImage": f"shipbot/app@{DIGEST}"},
                    "targetTags": ["shipbot/app-prod:r-1"], "mode": "Force"}


def test_another_acr_is_named_by_its_resource_id_and_any_other_registry_by_its_login_server(arm, certificate):
    other = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-dev/providers/Microsoft.ContainerRegistry/registries/dev"
    adapter = importer(arm, certificate, source_resource_ids={"dev.azurecr.io": other})
    for host in ("dev.azurecr.io", "mcr.microsoft.com"):
        arm.fail_next = {"code": "Stop", "message": "recorded only"}
        with pytest.raises(errors.PermanentError):
            adapter.import_image(source_host=host, source_repository="shipbot/app", digest=DIGEST,
                                 target_repository="shipbot/app", tag="r-1", force=False)

    sources = [body["source"] for method, _, _, body in arm.requests if method == "POST"]
    assert sources[0] == {"resourceId": other, "sourceImage": f"shipbot/app@{DIGEST}"}
    assert sources[1] == {"registryUri": "mcr.microsoft.com", "sourceImage": f"shipbot/app@{DIGEST}"}
    assert [body["mode"] for method, _, _, body in arm.requests if method == "POST"] == ["NoForce", "NoForce"]


def test_the_credential_is_asked_for_an_arm_token_and_a_wrong_one_is_refused(arm, certificate):
    adapter = importer(arm, certificate, token="stale-token")

    with pytest.raises(errors.PermanentError, match="AuthenticationFailed") as caught:
        adapter.import_image(source_host=None, source_repository="shipbot/app", digest=DIGEST,
                             target_repository="shipbot/app", tag="r-1", force=False)

    assert "stale-token" not in str(caught.value)
    assert adapter._client._config.credential.scopes[0] == ("https://management.azure.com/.default",)


def test_an_unknown_registry_is_permanent(arm, certificate):
    with pytest.raises(errors.PermanentError, match="ResourceNotFound"):
        importer(arm, certificate, registry="nosuchacr").import_image(
            source_host=None, source_repository="shipbot/app", digest=DIGEST, target_repository="shipbot/app",
            tag="r-1", force=False)


def test_an_import_that_outlasts_the_timeout_is_transient(arm, certificate):
    arm.polls = 10**6  # never ends while we wait

    with pytest.raises(errors.TransientError, match="still running"):
        importer(arm, certificate, timeout_seconds=0.2).import_image(
            source_host=None, source_repository="shipbot/app", digest=DIGEST, target_repository="shipbot/app",
            tag="r-1", force=False)


def test_arm_that_does_not_answer_is_transient(certificate):
    adapter = ArmImageImport(subscription_id=SUBSCRIPTION, resource_group="rg", registry_name="acr",
                             credential=StaticToken(), arm_endpoint="https://127.0.0.1:9", retry_total=0,
                             connection_verify=str(certificate[0]))
    with pytest.raises(errors.TransientError, match="did not answer"):
        adapter.import_image(source_host=None, source_repository="shipbot/app", digest=DIGEST,
                             target_repository="shipbot/app", tag="r-1", force=False)


def test_the_importer_is_built_from_the_registry_resource_id_and_a_malformed_one_is_refused(arm, certificate):
    resource_id = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-shipbot/providers/"
                   "Microsoft.ContainerRegistry/registries/shipbotacr")
    arm.fail_next = {"code": "Stop", "message": "recorded only"}
    adapter = ArmImageImport.from_resource_id(resource_id, credential=StaticToken("arm-token"), arm_endpoint=arm.url,
                                              polling_seconds=0, connection_verify=str(certificate[0]))

    with pytest.raises(errors.PermanentError, match="Stop"):
        adapter.import_image(source_host=None, source_repository="shipbot/app", digest=DIGEST,
                             target_repository="shipbot/app", tag="r-1", force=False)
    assert arm.requests[0][1] == f"{resource_id}/importImage"
    assert arm.requests[0][3]["source"]["resourceId"] == resource_id
    with pytest.raises(errors.PermanentError, match="resource id"):
        ArmImageImport.from_resource_id("shipbotacr", credential=StaticToken())
