"""Wire payloads -> domain events (shared.events, shared.webhooks): every accept, Ignored and InvalidEvent path.

The payloads are tests/fixtures/events/*.json, shaped as Event Grid, CloudEvents, the distribution registry,
GitHub and Azure DevOps send them; each table below changes one thing in a fixture.
"""

from __future__ import annotations

import ast
import base64
import copy
import dataclasses
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from shared import errors, events, webhooks

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
SECRET = "wh-secret-Zq7m2Kp9"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
DELETE = object()
HEX = "0123456789abcdef" * 4


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_bytes())


def changed(document: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `document` with each dotted path set to a value, or removed when the value is DELETE."""
    result = copy.deepcopy(document)
    for path, value in changes.items():
        *parents, key = path.split(".")
        node = result
        for parent in parents:
            node = node[int(parent)] if isinstance(node, list) else node[parent]
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return result


def body_of(document: Any) -> bytes:
    return json.dumps(document).encode()


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(body: bytes, event: str = "push", changes: dict[str, str | None] | None = None) -> dict[str, str]:
    """The headers GitHub sends with `body`; a change to None removes that header."""
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": DELIVERY, "X-Hub-Signature-256": signature(body),
               "X-GitHub-Hook-ID": "467213975", "User-Agent": "GitHub-Hookshot/3f1c2a9",
               "Content-Type": "application/json", **(changes or {})}
    return {name: value for name, value in headers.items() if value is not None}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def parse_github(body: bytes, headers: dict[str, str] | None = None, **options: str) -> Any:
    options = {"secret": SECRET, "release_branch": "main", **options}
    return webhooks.parse_github_webhook(github_headers(body) if headers is None else headers, body, **options)


def parse_devops(body: bytes, authorization: str | None = basic("shipbot", SECRET), **options: str) -> Any:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if authorization is not None:
        headers["Authorization"] = authorization
    options = {"secret": SECRET, "release_branch": "main", **options}
    return webhooks.parse_azure_devops_webhook(headers, body, **options)


EG_BLOB, CE_BLOB = load("eventgrid_blob_created.json"), load("cloudevents_blob_created.json")
EG_IMAGE, CE_IMAGE = load("eventgrid_image_pushed.json"), load("cloudevents_image_pushed.json")
NOTIFICATION = load("registry_notification.json")
GITHUB_PUSH = (FIXTURES / "github_push.json").read_bytes()
DEVOPS_PUSH = load("azure_devops_git_push.json")
SUBJECT = "/blobServices/default/containers/models/blobs/"
DIGEST = "sha256:213bbc182920ab41e18edc2001e06abcca6735d87782d9cef68abd83941cf0e5"

MODEL_UPLOADED = events.ModelUploaded(
    event_id="831e1650-001e-001b-66ab-eeb76e069631", model_name="diabetes", model_version="3",
    blob_name="diabetes/3/model.joblib",
    url="https://shipbotmodels.blob.core.windows.net/models/diabetes/3/model.joblib", content_length=524288,
    etag='"0x8DC3F4A1B2C3D4E"', sequencer="00000000000004420000000000028963",
    event_time=datetime(2024, 3, 14, 21, 7, 42, 958410, tzinfo=UTC))
IMAGE_PUSHED = events.ImagePushed(
    event_id="831e1650-001e-001b-66ab-eeb76e069631", registry="shipbotacr.azurecr.io",
    repository="shipbot/diabetes", tag="rel-3f9a1c2b7d4e", digest=DIGEST,
    media_type="application/vnd.docker.distribution.manifest.v2+json",
    event_time=datetime(2024, 3, 14, 21, 19, 47, 654961, tzinfo=UTC))
GITHUB_COMMIT = events.CommitPushed(
    event_id=DELIVERY, source="github", repository="contoso/shipbot-app", branch="main",
    commit="0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", clone_url="https://github.com/contoso/shipbot-app.git",
    pusher="mona", event_time=datetime(2024, 3, 14, 21, 8, 41, tzinfo=UTC))
DEVOPS_COMMIT = events.CommitPushed(
    event_id="03c164c2-8912-4d5e-8009-3707d5f83734", source="azure-devops", repository="ShipBot/shipbot-app",
    branch="main", commit="0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    clone_url="https://dev.azure.com/contoso/ShipBot/_git/shipbot-app", pusher="mona@contoso.com",
    event_time=datetime(2024, 3, 14, 21, 11, 43, 55910, tzinfo=UTC))


# --- Microsoft.Storage.BlobCreated -> ModelUploaded ---------------------------------------------------------

@pytest.mark.parametrize("payload", [EG_BLOB, CE_BLOB], ids=["event-grid", "cloudevents"])
def test_blob_created_in_either_schema_becomes_the_same_model_uploaded(payload):
    assert events.parse_blob_created(payload) == MODEL_UPLOADED


@pytest.mark.parametrize("payload", [body_of(EG_BLOB), body_of(EG_BLOB).decode()], ids=["bytes", "text"])
def test_blob_created_given_as_a_json_document_parses_like_the_mapping(payload):
    assert events.parse_blob_created(payload) == MODEL_UPLOADED


@pytest.mark.parametrize("blob_name", [
    "diabetes/3/model.onnx", "Diabetes_v2/2024.03.14-rc1/model.pkl", "a/1/b",
    "n" * 63 + "/" + "v" * 63 + "/" + "f" * 128,
])
def test_blob_names_that_are_model_paths_are_accepted(blob_name):
    event = events.parse_blob_created(changed(EG_BLOB, {"subject": SUBJECT + blob_name}))

    assert isinstance(event, events.ModelUploaded)
    assert (event.model_name, event.model_version, event.blob_name) == (*blob_name.split("/")[:2], blob_name)


def test_blob_created_keeps_no_sas_query_string_fragment_or_user_info_in_the_url():
    url = "https://user:pw@shipbotmodels.blob.core.windows.net/models/diabetes/3/model.joblib?sv=2022&sig=AbC%3D#x"

    event = events.parse_blob_created(changed(EG_BLOB, {"data.url": url}))

    assert event.url == "https://shipbotmodels.blob.core.windows.net/models/diabetes/3/model.joblib"


def test_blob_created_accepts_the_local_azurite_url_and_a_time_as_a_datetime():
    url = "http://127.0.0.1:10000/devstoreaccount1/models/diabetes/3/model.joblib"
    moment = datetime(2024, 3, 14, 22, 7, 42, tzinfo=timezone(timedelta(hours=1)))

    event = events.parse_blob_created(changed(EG_BLOB, {"data.url": url, "eventTime": moment}))

    assert (event.url, event.event_time) == (url, datetime(2024, 3, 14, 21, 7, 42, tzinfo=UTC))


def test_blob_created_reads_the_models_container_it_is_told():
    payload = changed(EG_BLOB, {"subject": "/blobServices/default/containers/ml-models/blobs/diabetes/3/model.joblib"})

    assert events.parse_blob_created(payload, models_container="ml-models").model_name == "diabetes"
    assert isinstance(events.parse_blob_created(EG_BLOB, models_container="ml-models"), events.Ignored)


@pytest.mark.parametrize(("payload", "reason"), [
    (changed(EG_BLOB, {"eventType": "Microsoft.Storage.BlobDeleted"}), "Microsoft.Storage.BlobDeleted"),
    (changed(CE_BLOB, {"type": "Microsoft.Storage.BlobTierChanged"}), "Microsoft.Storage.BlobTierChanged"),
    (changed(EG_BLOB, {"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}),
     "SubscriptionValidationEvent"),
    (changed(EG_BLOB, {"subject": "/blobServices/default/containers/ledger/blobs/releases/r1.json"}),
     "not in the models container"),
    (changed(CE_BLOB, {"subject": "/blobServices/default/containers/$logs/blobs/x"}), "not in the models container"),
    (changed(EG_BLOB, {"data.contentLength": 0}), "is empty"),
    (changed(EG_BLOB, {"data.api": "CreateFile", "data.contentLength": 0}), "CreateFile"),
    (changed(EG_BLOB, {"subject": SUBJECT + "diabetes/3/sample-request.json"}), "not the model"),
    (changed(CE_BLOB, {"subject": SUBJECT + "diabetes/3/sample-response.json"}), "not the model"),
], ids=["other-event-type", "other-cloudevents-type", "subscription-validation", "other-container",
        "logs-container", "empty-blob", "adls-create-file", "sample-request-sidecar", "sample-response-sidecar"])
def test_blob_created_that_is_not_for_us_is_ignored(payload, reason):
    result = events.parse_blob_created(payload)

    assert isinstance(result, events.Ignored)
    assert reason in result.reason


@pytest.mark.parametrize("blob_name", [
    "diabetes/3/../model.joblib", "diabetes/../3/model.joblib", "diabetes/3/..", "../3/model.joblib",
    "diabetes/3/model..joblib", "diabetes/%2e%2e/model.joblib", "diabetes/3/%2E%2E", "diabetes/3/model%20x.joblib",
    "diabetes\\3\\model.joblib", "diabetes/3/..\\..\\etc", "diabetes/3/my model.joblib", "diabetes/3/ model.joblib",
    "diabétes/3/model.joblib", "diabetes/3/modèle.joblib", "diabetes/3/model\u2028.joblib", "диабет/3/model",
    "diabetes/3/model\x00.joblib", "diabetes/3/model.joblib\n", "diabetes/3/\x1b[31mmodel", "diabetes/3\t/model",
    "model.joblib", "diabetes/model.joblib", "diabetes/3/sub/model.joblib", "a/b/c/d/e",
    "diabetes//model.joblib", "/diabetes/3/model.joblib", "diabetes/3/", "diabetes/3/model.joblib/",
    ".hidden/3/model.joblib", "diabetes/3/.model", "-x/3/model", "diabetes/_3/model",
    "n" * 64 + "/3/model", "diabetes/" + "v" * 64 + "/model", "diabetes/3/" + "f" * 129,
    "diabetes/3/model.joblib?x=1", "diabetes/3/model:joblib",
])
def test_blob_names_that_are_not_model_paths_are_ignored_with_a_printable_reason(blob_name):
    result = events.parse_blob_created(changed(EG_BLOB, {"subject": SUBJECT + blob_name}))

    assert isinstance(result, events.Ignored)
    assert "not a model path" in result.reason
    assert result.reason.isascii() and result.reason.isprintable()


def test_an_odd_blob_name_in_a_reason_is_cut_short():
    result = events.parse_blob_created(changed(EG_BLOB, {"subject": SUBJECT + "x" * 5000}))

    assert len(result.reason) < 300


@pytest.mark.parametrize(("payload", "message"), [
    ([EG_BLOB], "event is not a JSON object"),
    ("just text", "event is not JSON"),
    (b'{"id": "1", "eventType": ', "event is not JSON"),
    (b"\xff\xfe\x00garbage", "event is not"),
    (b"[" * 100_000 + b"]" * 100_000, "event is not usable JSON"),
    (b"42", "event is not a JSON object"),
    (None, "event is not a JSON object"),
    (changed(EG_BLOB, {"id": DELETE}), "event.id is missing"),
    (changed(EG_BLOB, {"id": 17}), "event.id has the wrong type int"),
    (changed(EG_BLOB, {"id": ""}), "event.id is empty"),
    (changed(EG_BLOB, {"eventType": DELETE}), "event.eventType is missing"),
    (changed(CE_BLOB, {"type": DELETE}), "event.type is missing"),
    (changed(CE_BLOB, {"specversion": "0.3"}), "specversion"),
    (changed(EG_BLOB, {"eventTime": DELETE}), "event.eventTime is missing"),
    (changed(CE_BLOB, {"time": DELETE}), "event.time is missing"),
    (changed(EG_BLOB, {"eventTime": "yesterday"}), "event.eventTime is not an RFC 3339 time"),
    (changed(EG_BLOB, {"eventTime": "2024-03-14T21:07:42"}), "event.eventTime has no time zone"),
    (changed(EG_BLOB, {"eventTime": 1710450462}), "event.eventTime has the wrong type int"),
    (changed(EG_BLOB, {"subject": DELETE}), "event.subject is missing"),
    (changed(EG_BLOB, {"subject": "/blobServices/default/containers/models"}), "event.subject is not"),
    (changed(EG_BLOB, {"subject": "diabetes/3/model.joblib"}), "event.subject is not"),
    (changed(EG_BLOB, {"data": DELETE}), "event.data is missing"),
    (changed(EG_BLOB, {"data": [1]}), "event.data has the wrong type list"),
    (changed(CE_BLOB, {"data": "eyJhcGkiOiAiUHV0QmxvYiJ9"}), "event.data has the wrong type str"),
    (changed(EG_BLOB, {"data.api": DELETE}), "event.data.api is missing"),
    (changed(EG_BLOB, {"data.eTag": None}), "event.data.eTag is missing"),
    (changed(EG_BLOB, {"data.contentLength": DELETE}), "event.data.contentLength is missing"),
    (changed(EG_BLOB, {"data.contentLength": "524288"}), "event.data.contentLength has the wrong type str"),
    (changed(EG_BLOB, {"data.contentLength": 524288.0}), "event.data.contentLength has the wrong type float"),
    (changed(EG_BLOB, {"data.contentLength": True}), "event.data.contentLength has the wrong type bool"),
    (changed(EG_BLOB, {"data.contentLength": -1}), "event.data.contentLength is negative"),
    (changed(EG_BLOB, {"data.url": DELETE}), "event.data.url is missing"),
    (changed(EG_BLOB, {"data.url": "ftp://shipbotmodels/models/a/1/m?sig=SECRETSAS"}), "event.data.url is not"),
    (changed(EG_BLOB, {"data.url": "not a url?sig=SECRETSAS"}), "event.data.url is not an http(s) URL"),
    (changed(EG_BLOB, {"data.url": "https://[::1/models?sig=SECRETSAS"}), "event.data.url is not an http(s) URL"),
    (changed(EG_BLOB, {"data.sequencer": 4420000000000028963}), "event.data.sequencer has the wrong type int"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 40 else None)
def test_blob_created_that_cannot_be_understood_is_invalid(payload, message):
    with pytest.raises(errors.InvalidEvent) as raised:
        events.parse_blob_created(payload)

    assert message in str(raised.value)
    assert "SECRETSAS" not in str(raised.value)


# --- Microsoft.ContainerRegistry.ImagePushed -> ImagePushed -------------------------------------------------

@pytest.mark.parametrize("payload", [EG_IMAGE, CE_IMAGE], ids=["event-grid", "cloudevents"])
def test_image_pushed_in_either_schema_becomes_the_same_image_pushed(payload):
    assert events.parse_image_pushed(payload) == IMAGE_PUSHED


def test_image_pushed_reference_is_what_rollouts_run_by_digest():
    assert IMAGE_PUSHED.reference == f"shipbotacr.azurecr.io/shipbot/diabetes@{DIGEST}"


@pytest.mark.parametrize("tag", [DELETE, None, ""], ids=["absent", "null", "empty"])
def test_image_pushed_by_digest_has_no_tag(tag):
    assert events.parse_image_pushed(changed(EG_IMAGE, {"data.target.tag": tag})).tag is None


@pytest.mark.parametrize("media_type", sorted(events.IMAGE_MEDIA_TYPES))
def test_image_pushed_accepts_every_image_manifest_and_index_media_type(media_type):
    event = events.parse_image_pushed(changed(CE_IMAGE, {"data.target.mediaType": media_type}))

    assert event.media_type == media_type


@pytest.mark.parametrize(("changes", "field", "value"), [
    ({"data.target.repository": "a__b/c--d/e.f_g"}, "repository", "a__b/c--d/e.f_g"),
    ({"data.target.tag": "_" + "v" * 127}, "tag", "_" + "v" * 127),
    ({"data.request.host": "127.0.0.1:5000"}, "registry", "127.0.0.1:5000"),
    ({"data.request.host": "localhost"}, "registry", "localhost"),
])
def test_image_pushed_accepts_every_valid_name(changes, field, value):
    assert getattr(events.parse_image_pushed(changed(EG_IMAGE, changes)), field) == value


@pytest.mark.parametrize(("changes", "reason"), [
    ({"eventType": "Microsoft.ContainerRegistry.ImageDeleted"}, "ImageDeleted"),
    ({"eventType": "Microsoft.ContainerRegistry.ChartPushed"}, "ChartPushed"),
    ({"data.action": "delete"}, "not a push"),
    ({"data.target.mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}, "not an image manifest"),
    ({"data.target.mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip"}, "not an image manifest"),
    ({"data.target.mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip"}, "not an image manifest"),
    ({"data.target.tag": f"sha256-{HEX}.sig"}, "cosign"),
    ({"data.target.tag": f"sha256-{HEX}.att"}, "cosign"),
])
def test_image_pushed_that_is_not_an_image_for_us_is_ignored(changes, reason):
    result = events.parse_image_pushed(changed(EG_IMAGE, changes))

    assert isinstance(result, events.Ignored)
    assert reason in result.reason


@pytest.mark.parametrize(("changes", "message"), [
    ({"data": DELETE}, "event.data is missing"),
    ({"data.action": DELETE}, "event.data.action is missing"),
    ({"data.target": DELETE}, "event.data.target is missing"),
    ({"data.target.mediaType": DELETE}, "event.data.target.mediaType is missing"),
    ({"data.request": DELETE}, "event.data.request is missing"),
    ({"data.request.host": DELETE}, "event.data.request.host is missing"),
    ({"data.request.host": "shipbot acr.azurecr.io"}, "event.data.request.host is not a valid host"),
    ({"data.request.host": "evil.example/x"}, "event.data.request.host is not a valid host"),
    ({"data.target.digest": DELETE}, "event.data.target.digest is missing"),
    ({"data.target.digest": DIGEST.upper()}, "event.data.target.digest is not a valid digest"),
    ({"data.target.digest": "sha256:abc"}, "event.data.target.digest is not a valid digest"),
    ({"data.target.digest": "sha512:" + HEX * 2}, "event.data.target.digest is not a valid digest"),
    ({"data.target.digest": DIGEST + "\n"}, "event.data.target.digest is not a valid digest"),
    ({"data.target.repository": DELETE}, "event.data.target.repository is missing"),
    ({"data.target.repository": "Shipbot/Diabetes"}, "event.data.target.repository is not a valid repository"),
    ({"data.target.repository": "shipbot//diabetes"}, "event.data.target.repository is not a valid repository"),
    ({"data.target.repository": "-shipbot"}, "event.data.target.repository is not a valid repository"),
    ({"data.target.repository": "a/" * 127 + "ab"}, "event.data.target.repository is not a valid repository"),
    ({"data.target.tag": "-latest"}, "event.data.target.tag is not a valid tag"),
    ({"data.target.tag": "v" * 129}, "event.data.target.tag is not a valid tag"),
    ({"data.target.tag": 3}, "event.data.target.tag has the wrong type int"),
    ({"eventTime": "2024-13-01T00:00:00Z"}, "event.eventTime is not an RFC 3339 time"),
])
def test_image_pushed_that_cannot_be_understood_is_invalid(changes, message):
    with pytest.raises(errors.InvalidEvent, match=re.escape(message)):
        events.parse_image_pushed(changed(EG_IMAGE, changes))


# --- distribution registry notifications -> Event Grid ImagePushed (the local event bridge) -----------------

LOCAL_TOPIC = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/" \
              "Microsoft.ContainerRegistry/registries/local"


def test_registry_notification_keeps_only_manifest_pushes_shaped_as_acr_sends_them():
    converted = webhooks.registry_notification_to_event_grid(NOTIFICATION, topic=LOCAL_TOPIC)

    digest = "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"
    source = NOTIFICATION["events"][1]
    assert converted == [{
        "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
        "topic": LOCAL_TOPIC,
        "subject": "shipbot/diabetes:rel-3f9a1c2b7d4e",
        "eventType": "Microsoft.ContainerRegistry.ImagePushed",
        "eventTime": "2024-03-14T21:19:47.402973Z",
        "data": {
            "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
            "timestamp": "2024-03-14T22:19:47.402973972+01:00",
            "action": "push",
            "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 1791,
                       "digest": digest, "length": 1791, "repository": "shipbot/diabetes", "tag": "rel-3f9a1c2b7d4e"},
            "request": {"id": "6df24a34-0959-4923-81ca-14f09767db19", "host": "127.0.0.1:5000", "method": "PUT",
                        "useragent": source["request"]["useragent"]},
        },
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }]
    assert set(converted[0]) == set(EG_IMAGE) and set(converted[0]["data"]) == set(EG_IMAGE["data"])
    assert set(converted[0]["data"]["request"]) == set(EG_IMAGE["data"]["request"])


def test_registry_notification_round_trips_through_parse_image_pushed():
    converted = webhooks.registry_notification_to_event_grid(body_of(NOTIFICATION), topic=LOCAL_TOPIC)

    assert [events.parse_image_pushed(json.loads(json.dumps(event))) for event in converted] == [events.ImagePushed(
        event_id="320678d8-ca14-430f-8bb6-4ca139cd83f7", registry="127.0.0.1:5000", repository="shipbot/diabetes",
        tag="rel-3f9a1c2b7d4e", digest="sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
        media_type="application/vnd.docker.distribution.manifest.v2+json",
        event_time=datetime(2024, 3, 14, 21, 19, 47, 402973, tzinfo=UTC))]


@pytest.mark.parametrize("media_type", sorted(events.IMAGE_MEDIA_TYPES))
def test_registry_push_by_digest_of_any_manifest_round_trips_without_a_tag(media_type):
    notification = changed(NOTIFICATION, {"events.1.target.tag": DELETE, "events.1.target.length": DELETE,
                                          "events.1.target.mediaType": media_type})

    [converted] = webhooks.registry_notification_to_event_grid(notification, topic=LOCAL_TOPIC)
    event = events.parse_image_pushed(converted)

    assert "tag" not in converted["data"]["target"] and converted["data"]["target"]["length"] == 1791
    assert converted["subject"] == f"shipbot/diabetes@{event.digest}"
    assert (event.tag, event.media_type) == (None, media_type)


@pytest.mark.parametrize("notification", [
    {"events": []},
    changed(NOTIFICATION, {"events.1.action": "pull"}),
    changed(NOTIFICATION, {"events.1.action": "delete"}),
    changed(NOTIFICATION, {"events.1.action": "mount"}),
    changed(NOTIFICATION, {"events.1.target.mediaType": "application/octet-stream"}),
], ids=["no-events", "pull", "delete", "mount", "blob-push"])
def test_registry_notification_without_a_manifest_push_converts_to_nothing(notification):
    assert webhooks.registry_notification_to_event_grid(notification, topic=LOCAL_TOPIC) == []


@pytest.mark.parametrize(("notification", "message"), [
    ([], "notification is not a JSON object"),
    (b"{", "notification is not JSON"),
    ({}, "notification.events is missing"),
    ({"events": {}}, "notification.events has the wrong type dict"),
    ({"events": [1]}, "notification.events[0] is not a JSON object"),
    (changed(NOTIFICATION, {"events.1.action": DELETE}), "notification.events[1].action is missing"),
    (changed(NOTIFICATION, {"events.1.target.digest": DELETE}), "notification.events[1].target.digest is missing"),
    (changed(NOTIFICATION, {"events.1.timestamp": "now"}), "notification.events[1].timestamp is not an RFC 3339"),
    (changed(NOTIFICATION, {"events.1.request": DELETE}), "notification.events[1].request is missing"),
])
def test_registry_notification_that_cannot_be_understood_is_invalid(notification, message):
    with pytest.raises(errors.InvalidEvent) as raised:
        webhooks.registry_notification_to_event_grid(notification, topic=LOCAL_TOPIC)

    assert message in str(raised.value)


# --- GitHub webhooks -> CommitPushed / Pinged ---------------------------------------------------------------

def test_signed_github_push_to_the_release_branch_becomes_commit_pushed():
    assert parse_github(GITHUB_PUSH) == GITHUB_COMMIT


@pytest.mark.parametrize("case", [str.lower, str.upper], ids=["lower", "upper"])
def test_github_header_names_are_case_insensitive(case):
    headers = {case(name): value for name, value in github_headers(GITHUB_PUSH).items()}

    assert parse_github(GITHUB_PUSH, headers) == GITHUB_COMMIT


def test_release_branch_may_be_named_by_its_full_ref():
    assert parse_github(GITHUB_PUSH, release_branch="refs/heads/main") == GITHUB_COMMIT


def test_github_push_with_pushed_at_as_a_time_string_keeps_that_time():
    body = body_of(changed(json.loads(GITHUB_PUSH), {"repository.pushed_at": "2024-03-14T21:08:41Z"}))

    assert parse_github(body).event_time == GITHUB_COMMIT.event_time


def test_github_ping_becomes_pinged():
    body = (FIXTURES / "github_ping.json").read_bytes()

    assert parse_github(body, github_headers(body, "ping")) == events.Pinged(DELIVERY, "Design for failure.")


def _github_case(name: str, changes: dict[str, Any] | None = None, event: str = "push") -> tuple[bytes, str]:
    body = (FIXTURES / name).read_bytes()
    return (body if changes is None else body_of(changed(json.loads(body), changes))), event


@pytest.mark.parametrize(("body", "event", "reason"), [
    (*_github_case("github_push_other_branch.json"), "not to the release branch 'main'"),
    (*_github_case("github_push.json", {"ref": "refs/heads/main-old"}), "not to the release branch"),
    (*_github_case("github_push.json", {"ref": "refs/heads/feature/main"}), "not to the release branch"),
    (*_github_case("github_push.json", {"ref": "refs/tags/main"}), "'refs/tags/main'"),
    (*_github_case("github_push.json", {"ref": "refs/tags/v1.4.0", "base_ref": "refs/heads/main"}), "refs/tags"),
    (*_github_case("github_branch_delete.json"), "was deleted"),
    (*_github_case("github_push.json", {"after": "0" * 40}), "was deleted"),
    (*_github_case("github_push.json", {"deleted": True}), "was deleted"),
    (*_github_case("github_push.json", event="pull_request"), "'pull_request' is not handled"),
    (*_github_case("github_push.json", event="workflow_run"), "'workflow_run' is not handled"),
    (b"not even json", "issues", "'issues' is not handled"),
])
def test_github_delivery_that_does_not_move_the_release_branch_is_ignored(body, event, reason):
    result = parse_github(body, github_headers(body, event))

    assert isinstance(result, events.Ignored)
    assert reason in result.reason


FORGED = "sha256=" + HEX
AUTH_FAILURES = [
    ("missing", {"X-Hub-Signature-256": None}, "X-Hub-Signature-256 is missing"),
    ("empty", {"X-Hub-Signature-256": ""}, "X-Hub-Signature-256 is missing"),
    ("sha1-only", {"X-Hub-Signature-256": None, "X-Hub-Signature": "sha1=" + HEX[:40]}, "is missing"),
    ("forged", {"X-Hub-Signature-256": FORGED}, "does not match"),
    ("other-secret", {"X-Hub-Signature-256": signature(GITHUB_PUSH, "another-secret")}, "does not match"),
    ("other-body", {"X-Hub-Signature-256": signature(GITHUB_PUSH + b" ")}, "does not match"),
    ("bare-hex", {"X-Hub-Signature-256": signature(GITHUB_PUSH).removeprefix("sha256=")}, "does not match"),
    ("upper-hex", {"X-Hub-Signature-256": signature(GITHUB_PUSH).upper()}, "does not match"),
    ("non-ascii", {"X-Hub-Signature-256": "sha256=\u00e9\udcff"}, "does not match"),
]


@pytest.mark.parametrize(("changes", "message"), [case[1:] for case in AUTH_FAILURES],
                         ids=[case[0] for case in AUTH_FAILURES])
def test_github_delivery_without_a_valid_signature_is_unauthenticated(changes, message):
    with pytest.raises(events.Unauthenticated, match=message):
        parse_github(GITHUB_PUSH, github_headers(GITHUB_PUSH, changes=changes))


def test_github_signature_is_checked_before_the_body_is_read():
    with pytest.raises(events.Unauthenticated):
        parse_github(b"{not json", github_headers(b"{", changes={"X-Hub-Signature-256": FORGED}))


def _signed(body: bytes, **changes: str | None) -> tuple[bytes, dict[str, str]]:
    return body, github_headers(body, changes={name.replace("_", "-"): value for name, value in changes.items()})


@pytest.mark.parametrize(("body", "headers", "message"), [
    (*_signed(b'{"ref": "refs/heads/main", '), "body is not JSON"),
    (*_signed(b""), "body is not JSON"),
    (*_signed(b"\xff\xfe\xfa"), "body is not"),
    (*_signed(b"[" * 50_000 + b"]" * 50_000), "body is not usable JSON"),
    (*_signed(b"[]"), "body is not a JSON object"),
    (*_signed(b'"refs/heads/main"'), "body is not a JSON object"),
    (*_signed(b"payload=%7B%7D", Content_Type="application/x-www-form-urlencoded"), "application/json"),
    (*_signed(GITHUB_PUSH, X_GitHub_Event=None), "x-github-event header is missing"),
    (*_signed(GITHUB_PUSH, X_GitHub_Delivery=None), "x-github-delivery header is missing"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"ref": DELETE}))), "body.ref is missing"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"after": DELETE}))), "body.after is missing"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"after": "0d1a26e"}))), "body.after is not a valid commit id"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"after": "0D1A26E67D8F5EAF1F6BA5C57FC3C7D91AC0FD1C"}))),
     "body.after is not a valid commit id"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"after": 42}))), "body.after has the wrong type int"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"deleted": "false"}))), "body.deleted has the wrong type"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"repository": DELETE}))), "body.repository is missing"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"repository.full_name": DELETE}))),
     "body.repository.full_name is missing"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"repository.clone_url": "git@github.com:c/s.git"}))),
     "body.repository.clone_url is not an http(s) URL"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"repository.pushed_at": DELETE}))),
     "body.repository.pushed_at is missing"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"repository.pushed_at": "soon"}))),
     "body.repository.pushed_at is not an RFC 3339 time"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"pusher": DELETE}))), "body.pusher is missing"),
    (*_signed(body_of(changed(json.loads(GITHUB_PUSH), {"pusher": "mona"}))), "body.pusher has the wrong type"),
    (*_signed(b'{"hook_id": 1}', X_GitHub_Event="ping"), "body.zen is missing"),
])
def test_github_delivery_that_cannot_be_understood_is_invalid(body, headers, message):
    with pytest.raises(errors.InvalidEvent) as raised:
        parse_github(body, headers)

    assert not isinstance(raised.value, events.Unauthenticated)
    assert message in str(raised.value)


@pytest.mark.parametrize("parse", [parse_github, parse_devops], ids=["github", "azure-devops"])
def test_a_body_over_one_mebibyte_is_too_large_before_any_signature_is_checked(parse):
    body = b'{"padding": "' + b"x" * webhooks.MAX_WEBHOOK_BYTES + b'"}'

    with pytest.raises(events.TooLarge, match="too large"):
        parse(body, {"X-GitHub-Event": "push"}) if parse is parse_github else parse(body, None)


def test_a_body_of_exactly_one_mebibyte_is_not_too_large():
    body = GITHUB_PUSH.rstrip() + b" " * (webhooks.MAX_WEBHOOK_BYTES - len(GITHUB_PUSH.rstrip()))

    assert len(body) == webhooks.MAX_WEBHOOK_BYTES == 1024 * 1024
    assert parse_github(body) == GITHUB_COMMIT


@pytest.mark.parametrize("parse", [parse_github, parse_devops], ids=["github", "azure-devops"])
@pytest.mark.parametrize(("options", "message"), [
    ({"secret": ""}, "secret is empty"),
    ({"release_branch": ""}, "release branch is empty"),
    ({"release_branch": "refs/heads/"}, "release branch is empty"),
])
def test_an_empty_secret_or_release_branch_is_a_configuration_error_not_an_open_door(parse, options, message):
    with pytest.raises(ValueError, match=message) as raised:
        parse(GITHUB_PUSH, **options)

    assert not isinstance(raised.value, errors.ReleaseError)


def test_github_messages_never_contain_the_secret_or_any_signature():
    cases = [(GITHUB_PUSH, github_headers(GITHUB_PUSH, changes=changes)) for _, changes, _ in AUTH_FAILURES]
    cases += [_signed(b"[]"), _signed(b"{"), _signed(body_of(changed(json.loads(GITHUB_PUSH), {"after": SECRET})))]
    messages = []
    for body, headers in cases:
        with pytest.raises(errors.InvalidEvent) as raised:
            parse_github(body, headers)
        messages.append(str(raised.value))

    secrets = [SECRET, HEX, signature(GITHUB_PUSH).removeprefix("sha256="), signature(GITHUB_PUSH + b" ")[7:]]
    assert not [(message, secret) for message in messages for secret in secrets if secret.lower() in message.lower()]


# --- Azure DevOps service hooks -> CommitPushed -------------------------------------------------------------

def test_azure_devops_git_push_to_the_release_branch_becomes_commit_pushed_without_user_info_in_the_url():
    assert parse_devops(body_of(DEVOPS_PUSH)) == DEVOPS_COMMIT


@pytest.mark.parametrize(("authorization", "secret", "body_changes", "expected"), [
    (basic("", SECRET), SECRET, {}, DEVOPS_COMMIT),
    ("basic " + base64.b64encode(f"x:{SECRET}".encode()).decode(), SECRET, {}, DEVOPS_COMMIT),
    (basic("shipbot", "pass:with:colons"), "pass:with:colons", {}, DEVOPS_COMMIT),
    (basic("shipbot", "pässwörd"), "pässwörd", {}, DEVOPS_COMMIT),
    (basic("shipbot", SECRET), SECRET, {"resource.refUpdates": [
        {"name": "refs/tags/v1", "oldObjectId": "0" * 40, "newObjectId": HEX[:40]},
        {"name": "refs/heads/dev", "oldObjectId": HEX[:40], "newObjectId": "1" * 40},
        DEVOPS_PUSH["resource"]["refUpdates"][0]]}, DEVOPS_COMMIT),
    (basic("shipbot", SECRET), SECRET, {"resource.repository.project": DELETE},
     dataclasses.replace(DEVOPS_COMMIT, repository="shipbot-app")),
    (basic("shipbot", SECRET), SECRET, {"resource.pushedBy.uniqueName": DELETE},
     dataclasses.replace(DEVOPS_COMMIT, pusher="Mona Lisa")),
], ids=["no-user-name", "lower-case-scheme", "password-with-colons", "non-ascii-password", "several-ref-updates",
        "no-project", "no-unique-name"])
def test_azure_devops_git_push_variants_are_accepted(authorization, secret, body_changes, expected):
    assert parse_devops(body_of(changed(DEVOPS_PUSH, body_changes)), authorization, secret=secret) == expected


@pytest.mark.parametrize(("changes", "reason"), [
    ({"resource.refUpdates.0.name": "refs/heads/feature/x"}, "does not update the release branch 'main'"),
    ({"resource.refUpdates.0.name": "refs/tags/main"}, "does not update the release branch"),
    ({"resource.refUpdates": []}, "does not update the release branch"),
    ({"resource.refUpdates.0.newObjectId": "0" * 40}, "was deleted"),
    ({"eventType": "git.pullrequest.created"}, "'git.pullrequest.created' is not handled"),
    ({"eventType": "build.complete", "resource": {}}, "'build.complete' is not handled"),
])
def test_azure_devops_event_that_does_not_move_the_release_branch_is_ignored(changes, reason):
    result = parse_devops(body_of(changed(DEVOPS_PUSH, changes)))

    assert isinstance(result, events.Ignored)
    assert reason in result.reason


DEVOPS_AUTH_FAILURES = [
    ("missing", None, "missing"),
    ("empty", "", "missing"),
    ("scheme-only", "Basic", "missing"),
    ("bearer", f"Bearer {SECRET}", "missing"),
    ("wrong-password", basic("shipbot", SECRET + "x"), "does not match"),
    ("password-prefix", basic("shipbot", SECRET[:-1]), "does not match"),
    ("secret-as-user", basic(SECRET, ""), "does not match"),
    ("no-colon", "Basic " + base64.b64encode(SECRET.encode()).decode(), "does not match"),
    ("not-base64", f"Basic {SECRET}!!", "not base64"),
    ("non-ascii", "Basic \u00e9t\u00e9", "not base64"),
]


@pytest.mark.parametrize(("authorization", "message"), [case[1:] for case in DEVOPS_AUTH_FAILURES],
                         ids=[case[0] for case in DEVOPS_AUTH_FAILURES])
def test_azure_devops_hook_without_the_right_basic_password_is_unauthenticated(authorization, message):
    with pytest.raises(events.Unauthenticated, match=message) as raised:
        parse_devops(body_of(DEVOPS_PUSH), authorization)

    token = (authorization or "").partition(" ")[2]
    assert SECRET not in str(raised.value) and (not token or token not in str(raised.value))


@pytest.mark.parametrize(("body", "message"), [
    (b"{", "body is not JSON"),
    (b"[]", "body is not a JSON object"),
    (body_of(changed(DEVOPS_PUSH, {"id": DELETE})), "body.id is missing"),
    (body_of(changed(DEVOPS_PUSH, {"eventType": 1})), "body.eventType has the wrong type int"),
    (body_of(changed(DEVOPS_PUSH, {"resource": DELETE})), "body.resource is missing"),
    (body_of(changed(DEVOPS_PUSH, {"resource.refUpdates": DELETE})), "body.resource.refUpdates is missing"),
    (body_of(changed(DEVOPS_PUSH, {"resource.refUpdates.0.name": DELETE})), "body.resource.refUpdates[0].name"),
    (body_of(changed(DEVOPS_PUSH, {"resource.refUpdates.0.newObjectId": "33b55f7"})),
     "newObjectId is not a valid commit id"),
    (body_of(changed(DEVOPS_PUSH, {"resource.repository.remoteUrl": DELETE})), "remoteUrl is missing"),
    (body_of(changed(DEVOPS_PUSH, {"resource.repository.project": "ShipBot"})), "project has the wrong type str"),
    (body_of(changed(DEVOPS_PUSH, {"resource.pushedBy": DELETE})), "body.resource.pushedBy is missing"),
    (body_of(changed(DEVOPS_PUSH, {"createdDate": "2024-03-14"})), "body.createdDate has no time zone"),
])
def test_azure_devops_hook_that_cannot_be_understood_is_invalid(body, message):
    with pytest.raises(errors.InvalidEvent) as raised:
        parse_devops(body)

    assert not isinstance(raised.value, events.Unauthenticated)
    assert message in str(raised.value)


# --- timers, and the module's contract -----------------------------------------------------------------------

@pytest.mark.parametrize("fact", [events.PromotionDue, events.ReconcileDue])
def test_timer_facts_carry_when_they_fired(fact):
    moment = datetime(2024, 3, 15, 2, 0, tzinfo=UTC)

    assert fact(moment).fired_at == moment == fact(fired_at=moment).fired_at


@pytest.mark.parametrize("event", [MODEL_UPLOADED, IMAGE_PUSHED, GITHUB_COMMIT, events.Pinged("1", "zen"),
                                   events.PromotionDue(datetime.now(UTC)), events.Ignored("why")],
                         ids=lambda event: type(event).__name__)
def test_events_are_frozen_facts(event):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, dataclasses.fields(event)[0].name, "other")


def test_unauthenticated_and_too_large_are_invalid_events_the_trigger_can_tell_apart():
    assert issubclass(events.Unauthenticated, errors.InvalidEvent)
    assert issubclass(events.TooLarge, errors.InvalidEvent)
    assert not issubclass(events.Unauthenticated, events.TooLarge)


@pytest.mark.parametrize("module", [events, webhooks], ids=lambda module: module.__name__)
def test_parsing_modules_import_only_the_standard_library_and_errors(module):
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert imported <= {"__future__", "base64", "collections", "dataclasses", "datetime", "hashlib", "hmac", "json",
                        "re", "typing", "urllib", "shared"}
    assert "environ" not in Path(module.__file__).read_text()
