"""The model registry as a source: Azure ML's ModelRegistered event (both schemas, both key casings, other
workspaces, malformed ones), the fleet's model_source, and the bot routing a registration to the applications
that follow that model from the registry, never to those that follow the models container."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from shared import errors, events, fleet
from shared.bot import Bot
from shared.engine import Engine
from shared.settings import Settings
from test_engine import World

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "events" / "eventgrid_model_registered.json").read_text())
WORKSPACE = FIXTURE["topic"]


def registered(**changes) -> dict:
    doc = copy.deepcopy(FIXTURE)
    for key, value in changes.items():
        if key.startswith("data_"):
            doc["data"][key.removeprefix("data_")] = value
        else:
            doc[key] = value
    return doc


def test_model_registered_names_the_model_version_and_workspace():
    event = events.parse_model_registered(FIXTURE)

    assert (event.event_id, event.model_name, event.model_version, event.workspace) == (
        FIXTURE["id"], "diabetes", "3", WORKSPACE)


def test_pascal_case_keys_and_a_numeric_version_are_read_alike():
    doc = registered()
    doc["data"] = {"ModelName": "diabetes", "ModelVersion": 3, "ModelTags": {}}

    assert events.parse_model_registered(doc).model_version == "3"


def test_the_cloudevents_schema_reads_its_workspace_from_the_source():
    doc = {"specversion": "1.0", "id": "c-1", "source": WORKSPACE, "type": events.MODEL_REGISTERED,
           "time": FIXTURE["eventTime"], "subject": FIXTURE["subject"], "data": FIXTURE["data"]}

    assert events.parse_model_registered(doc).workspace == WORKSPACE


def test_an_event_of_another_workspace_is_ignored_and_the_workspace_compares_in_any_case():
    other = WORKSPACE.rsplit("/", 1)[0] + "/elsewhere"

    assert isinstance(events.parse_model_registered(registered(topic=other), workspace=WORKSPACE), events.Ignored)
    assert isinstance(events.parse_model_registered(FIXTURE, workspace=WORKSPACE.upper()), events.ModelRegistered)


def test_model_deployed_is_ignored():
    ignored = events.parse_model_registered(registered(eventType="Microsoft.MachineLearningServices.ModelDeployed"))

    assert isinstance(ignored, events.Ignored) and "ModelDeployed" in ignored.reason


@pytest.mark.parametrize("changes, says", [
    ({"data_modelName": "../etc"}, "modelName is missing or not a model name"),
    ({"data_modelName": None}, "modelName is missing"),
    ({"data_modelVersion": "latest"}, "modelVersion is missing or not a version number"),
    ({"data_modelVersion": "0"}, "not a version number"),
    ({"data_modelVersion": True}, "not a version number"),
    ({"topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z"},
     "not an Azure ML workspace's resource id"),
    ({"data": "not an object"}, "event.data has the wrong type"),
    ({"eventTime": "yesterday"}, "not an RFC 3339 time"),
], ids=["path-name", "no-name", "word-version", "zero", "bool", "storage-topic", "data-string", "bad-time"])
def test_a_malformed_registration_is_an_invalid_event_that_names_the_field(changes, says):
    with pytest.raises(errors.InvalidEvent, match=says.replace(".", r"\.").replace("'", ".")):
        events.parse_model_registered(registered(**changes))


def test_an_azureml_tracking_uri_names_its_workspace_and_a_plain_one_none():
    uri = f"azureml://westeurope.api.azureml.ms/mlflow/v2.0{WORKSPACE}"

    assert events.workspace_of(uri) == WORKSPACE
    assert Settings.from_env({"SHIPBOT_MLFLOW_URI": uri}).workspace == WORKSPACE
    assert Settings.from_env({}).workspace == ""
    assert Settings.from_env({"SHIPBOT_MLFLOW_WORKSPACE": "/x"}).workspace == "/x"


# -- the fleet ------------------------------------------------------------------------------------------------
APP = """
apps:
  - name: scoring
    image: shipbot/scoring
    models: [diabetes]
    model_source: {kind: mlflow, alias: champion}
    environments:
      - {name: staging, target: {kind: local, port: 8095}, rule: on_green}
"""


def test_an_application_names_its_model_source_and_its_selector():
    app = fleet.parse(APP).apps[0]

    assert (app.model_source.kind, app.model_source.alias, app.model_source.stage) == ("mlflow", "champion", None)
    assert fleet.parse(APP.replace("    model_source: {kind: mlflow, alias: champion}\n", "")).apps[0] \
        .model_source.kind == "blob"


@pytest.mark.parametrize("source, says", [
    ("{kind: blob, alias: champion}", "alias and stage choose a registry version: they go with kind: mlflow"),
    ("{kind: mlflow, alias: champion, stage: Staging}", "name an alias or a stage, not both"),
    ("{kind: s3}", "apps[scoring].model_source.kind"),
    ("{kind: mlflow, stage: Archived}", "apps[scoring].model_source.stage"),
    ("{kind: mlflow, alias: 'a b'}", "apps[scoring].model_source.alias"),
])
def test_a_model_source_that_makes_no_sense_is_refused_with_its_line(source, says):
    with pytest.raises(fleet.FleetError) as refused:
        fleet.parse(APP.replace("{kind: mlflow, alias: champion}", source))

    assert "line 6" in str(refused.value) and says in str(refused.value)


def test_the_settings_application_takes_its_model_source_from_the_settings():
    app = fleet.single(Settings.from_env({"SHIPBOT_MODEL_SOURCE": "mlflow", "SHIPBOT_MODEL_STAGE": "Production"})).apps[0]

    assert (app.model_source.kind, app.model_source.stage) == ("mlflow", "Production")
    with pytest.raises(errors.PermanentError, match="SHIPBOT_MODEL_SOURCE must be blob or mlflow"):
        Settings.from_env({"SHIPBOT_MODEL_SOURCE": "s3"})


# -- routing --------------------------------------------------------------------------------------------------
TWO = """
apps:
  - name: blobby
    image: shipbot/blobby
    models: [diabetes]
    environments:
      - {name: staging, target: {kind: local, port: 8096}, rule: on_green}
  - name: registered
    image: shipbot/registered
    models: [diabetes]
    model_source: {kind: mlflow}
    environments:
      - {name: staging, target: {kind: local, port: 8097}, rule: on_green}
"""


@pytest.fixture
def two():
    worlds = {"blobby": World(), "registered": World()}
    for name, world in worlds.items():
        world.engine = Engine(world.engine.ports, dataclasses.replace(world.engine.config, app=name))
        world.models.put("diabetes", "1", {"model.joblib": name.encode()}, uploaded=world.clock())
    ledger = worlds["blobby"].ledger
    ledger.put_fleet(TWO, by="alice", at=worlds["blobby"].clock())
    bot = Bot(ledger=ledger, default=fleet.parse(TWO), engine_for=lambda app: worlds[app.name].engine, root="blobby")
    return bot, worlds


def test_a_registration_reaches_the_applications_that_follow_the_model_from_the_registry_only(two):
    bot, worlds = two

    routed = bot.handle(events.parse_model_registered(FIXTURE))

    assert list(routed.outcomes) == ["registered"]
    (release,) = worlds["registered"].ledger.list_releases()
    assert release.trigger == "model diabetes/3 registered"
    assert [r.trigger for r in worlds["blobby"].ledger.list_releases()] == []


def test_an_upload_reaches_the_applications_that_follow_the_models_container_only(two):
    bot, worlds = two

    routed = bot.handle(worlds["blobby"].event_model("1"))

    assert list(routed.outcomes) == ["blobby"]
    assert not worlds["registered"].ledger.list_releases()


def test_a_registration_of_a_model_nobody_follows_is_acknowledged_and_changes_nothing(two):
    bot, worlds = two

    routed = bot.handle(events.parse_model_registered(registered(data_modelName="churn")))

    assert routed.summary == "ignored: no application follows model churn from the model registry"
    assert not any(world.ledger.list_releases() for world in worlds.values())


@pytest.mark.parametrize("env, says", [
    ({"SHIPBOT_MODEL_SOURCE": "mlflow", "SHIPBOT_MODEL_STAGE": "production"}, "must be Staging or Production"),
    ({"SHIPBOT_MODEL_ALIAS": "champion"}, "go with SHIPBOT_MODEL_SOURCE=mlflow"),
    ({"SHIPBOT_MODEL_SOURCE": "mlflow", "SHIPBOT_MODEL_ALIAS": "a", "SHIPBOT_MODEL_STAGE": "Staging"}, "not both"),
    ({"SHIPBOT_MODEL_SOURCE": "mlflow", "SHIPBOT_MODEL_ALIAS": "a b"}, "letters, digits"),
])
def test_a_model_selector_in_the_settings_that_makes_no_sense_is_refused_when_read(env, says):
    with pytest.raises(errors.PermanentError, match=says):
        Settings.from_env(env)
