"""The fake ARM endpoint of ACR Tasks speaks the SDK's wire shapes: every key it sends is a REST field of the
azure-mgmt-containerregistrytasks model the operation returns (read from the models' own field tables), and
what it sends deserializes into the values the adapters read."""

from __future__ import annotations

import datetime as dt

import pytest
from azure.mgmt.containerregistrytasks import models

from shared.adapters.azure import acr_runs
from tests.fakes import arm_acr


def rest_names(model: type) -> set[str]:
    model()  # the SDK fills its field table on first use
    return {field._rest_name for field in model._attr_to_rest_field.values()}


@pytest.fixture
def fake():
    with arm_acr.FakeAcr() as fake:
        yield fake


def scheduled_build(fake: arm_acr.FakeAcr) -> arm_acr.FakeRun:
    _, upload = fake.upload_url()
    fake.source_blob(upload["relativePath"]).upload_blob(b"context", overwrite=True)
    status, _ = fake.schedule({"type": "DockerBuildRequest", "dockerFilePath": "model_api/Dockerfile",
                               "imageNames": ["shipbot/app:t1"], "arguments": [], "timeout": 600,
                               "sourceLocation": upload["relativePath"], "platform": {"os": "Linux"}})
    assert status == 200
    return fake.last_run()


def test_a_finished_run_on_the_wire_has_only_the_run_models_fields(fake):
    run = scheduled_build(fake)
    fake.reveal(run, acr_runs.FAILED, error="failed during run, err: exit status 1", log="x",
                output_images=[{"registry": "r", "repository": "shipbot/app", "tag": "t1", "digest": "sha256:1"}])
    fake.get(run.run_id)
    status, wire = fake.get(run.run_id)

    assert status == 200
    assert set(wire) <= rest_names(models.Run)
    assert set(wire["properties"]) <= rest_names(models.RunProperties)
    assert set(wire["properties"]["outputImages"][0]) <= rest_names(models.ImageDescriptor)
    parsed = models.Run(wire)
    assert (parsed.run_id, parsed.status, parsed.run_error_message) == (run.run_id, "Failed",
                                                                       "failed during run, err: exit status 1")
    assert parsed.create_time <= parsed.start_time <= parsed.finish_time <= dt.datetime.now(dt.UTC)


def test_upload_urls_log_links_and_errors_have_the_sdk_models_fields(fake):
    _, upload = fake.upload_url()
    run = scheduled_build(fake)
    _, link = fake.log_link(run.run_id)
    status, error = fake.get("cf404")

    assert set(upload) <= rest_names(models.SourceUploadDefinition)
    assert set(link) <= rest_names(models.RunGetLogResult)
    assert status == 404 and set(error["error"]) <= rest_names(models.ErrorDetail)


def test_requests_the_sdk_serializes_are_the_ones_the_fake_checks(fake):
    client = fake.client()
    client.registries.schedule_run(arm_acr.RESOURCE_GROUP, arm_acr.REGISTRY, models.EncodedTaskRunRequest(
        encoded_task_content="c3RlcHM6IFt7aWQ6IGEsIGNtZDogYn1d",  # "steps: [{id: a, cmd: b}]"
        platform=models.PlatformProperties(os="Linux"), timeout=300))

    method, path, body = fake.requests[-1]
    assert (method, path.rsplit("/", 1)[-1]) == ("POST", "scheduleRun")
    assert body == {"type": "EncodedTaskRunRequest", "encodedTaskContent": "c3RlcHM6IFt7aWQ6IGEsIGNtZDogYn1d",
                    "platform": {"os": "Linux"}, "timeout": 300}
    assert fake.last_run().task == {"steps": [{"id": "a", "cmd": "b"}]}


def test_a_task_that_is_not_base64_yaml_with_steps_is_refused_as_arm_would(fake):
    status, error = fake.schedule({"type": "EncodedTaskRunRequest", "encodedTaskContent": "bm8gc3RlcHM=",
                                   "platform": {"os": "Linux"}})

    assert status == 400 and error["error"]["code"] == "InvalidRequestContent"
    assert not fake.runs
