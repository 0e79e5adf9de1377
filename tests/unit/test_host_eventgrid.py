"""The local host's Event Grid webhook behaves like the Functions host's Event Grid extension."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import httpx
import pytest

from shared import events
from stack.host import Host
from stack.keys import HostKeys
from stack.testing import serving

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
KEYS = HostKeys(master="master-key-0123456789", function_keys={"default": "function-key-0123456789"},
                system_keys={"eventgrid_extension": "system-key-0123456789"})
received: list[func.EventGridEvent] = []
clouds: list[func.CloudEvent] = []


def make_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.function_name("model_uploaded")
    @app.event_grid_trigger(arg_name="event")
    def model_uploaded(event: func.EventGridEvent) -> None:
        received.append(event)
        if event.subject == "fail":
            raise RuntimeError("this one fails")

    @app.function_name("cloud_events")
    @app.event_grid_trigger(arg_name="event")
    def cloud_events(event: func.CloudEvent) -> None:
        clouds.append(event)

    @app.route(route="plain")
    def plain(req: func.HttpRequest) -> str:
        return "not an event grid function"

    return app


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    received.clear()
    clouds.clear()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = Host(make_app(), settings={}, state_dir=tmp_path, folder=tmp_path, url=f"http://127.0.0.1:{port}",
                host_keys=KEYS, workers=2)
    with serving(host, port=port) as url:
        yield url


def webhook(base: str, *, function: str = "model_uploaded", code: str | None = KEYS.system_keys["eventgrid_extension"]):
    params = {"functionName": function} | ({"code": code} if code else {})
    return f"{base}/runtime/webhooks/eventgrid", params


def notify(base: str, body: bytes | str, *, content_type: str = "application/json", **kwargs) -> httpx.Response:
    url, params = webhook(base, **kwargs)
    return httpx.post(url, params=params, content=body,
                      headers={"aeg-event-type": "Notification", "content-type": content_type})


def eg_event(subject: str, index: int) -> dict:
    return {"id": f"e{index}", "topic": "/t", "subject": subject, "eventType": "Test.Event", "data": {"n": index},
            "eventTime": "2024-03-14T21:07:42.9584103Z", "dataVersion": "1.0", "metadataVersion": "1"}


def test_the_subscription_validation_handshake_answers_the_code(base: str) -> None:
    url, params = webhook(base)
    body = [{"id": "v1", "topic": "/t", "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
             "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}, "dataVersion": "2",
             "eventTime": "2024-03-14T21:07:42Z", "metadataVersion": "1"}]
    answer = httpx.post(url, params=params, json=body, headers={"aeg-event-type": "SubscriptionValidation"})
    assert answer.status_code == 200
    assert answer.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert received == []


def test_a_request_without_aeg_event_type_is_400(base: str) -> None:
    url, params = webhook(base)
    assert httpx.post(url, params=params, json=[eg_event("a", 1)]).status_code == 400
    assert received == []


def test_keys_and_function_names_are_checked(base: str) -> None:
    body = json.dumps([eg_event("a", 1)])
    assert notify(base, body, code=None).status_code == 401
    assert notify(base, body, code="wrong").status_code == 401
    assert notify(base, body, code=KEYS.function_keys["default"]).status_code == 401  # a function key is not enough
    assert notify(base, body, function="no_such_function").status_code == 404
    assert notify(base, body, function="plain").status_code == 404
    assert notify(base, body, code=KEYS.master).status_code == 200


def test_bad_json_is_400(base: str) -> None:
    assert notify(base, b"[{").status_code == 400
    assert notify(base, b"[1, 2]").status_code == 400


def test_a_batch_with_one_failing_event_is_500_and_the_others_ran_in_order(base: str) -> None:
    answer = notify(base, json.dumps([eg_event("ok", 1), eg_event("fail", 2), eg_event("ok", 3)]))
    assert answer.status_code == 500
    assert [e.id for e in received] == ["e1", "e2", "e3"]


def test_an_event_grid_event_reaches_the_function_with_its_envelope(base: str) -> None:
    fixture = json.loads((FIXTURES / "eventgrid_blob_created.json").read_text())
    assert notify(base, json.dumps([fixture])).status_code == 200
    (event,) = received
    assert (event.id, event.topic, event.subject) == (fixture["id"], fixture["topic"], fixture["subject"])
    assert event.event_type == events.BLOB_CREATED and event.data_version == ""
    assert event.event_time.isoformat() == "2024-03-14T21:07:42.958410+00:00"
    rebuilt = {"id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
               "eventTime": event.event_time.isoformat(), "data": event.get_json(), "dataVersion": event.data_version}
    assert isinstance(events.parse_blob_created(rebuilt), events.ModelUploaded)


def test_a_single_cloud_event_is_dispatched(base: str) -> None:
    fixture = (FIXTURES / "cloudevents_blob_created.json").read_text()
    assert notify(base, fixture, content_type="application/cloudevents+json").status_code == 200
    (event,) = received
    assert event.event_type == events.BLOB_CREATED
    assert event.topic.endswith("/storageAccounts/shipbotmodels")
    assert event.get_json()["sequencer"] == "00000000000004420000000000028963"


def test_a_cloud_event_batch_is_dispatched_in_order(base: str) -> None:
    blob = json.loads((FIXTURES / "cloudevents_blob_created.json").read_text())
    image = json.loads((FIXTURES / "cloudevents_image_pushed.json").read_text())
    answer = notify(base, json.dumps([blob, {**image, "id": "second"}]),
                    content_type="application/cloudevents-batch+json")
    assert answer.status_code == 200
    assert [e.event_type for e in received] == [events.BLOB_CREATED, events.IMAGE_PUSHED]
    assert received[1].id == "second"


def test_a_function_annotated_with_cloud_event_gets_cloud_events(base: str) -> None:
    fixture = (FIXTURES / "cloudevents_image_pushed.json").read_text()
    assert notify(base, fixture, function="cloud_events", content_type="application/cloudevents+json").status_code == 200
    (event,) = clouds
    assert isinstance(event, func.CloudEvent)
    assert event.type == events.IMAGE_PUSHED and event.specversion == "1.0"


def test_the_cloud_events_abuse_protection_handshake_is_answered(base: str) -> None:
    url, params = webhook(base)
    answer = httpx.options(url, params=params, headers={"webhook-request-origin": "eventgrid.azure.net"})
    assert answer.status_code == 200
    assert answer.headers["webhook-allowed-origin"] == "eventgrid.azure.net"


def test_a_subscription_deletion_is_acknowledged_without_an_invocation(base: str) -> None:
    url, params = webhook(base)
    answer = httpx.post(url, params=params, json=[], headers={"aeg-event-type": "SubscriptionDeletion"})
    assert answer.status_code == 202
    assert received == []
