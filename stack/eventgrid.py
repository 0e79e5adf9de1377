"""The Event Grid extension's webhook, as the Functions host serves it: what a request asks for.

    POST /runtime/webhooks/eventgrid?functionName=<name>&code=<system key>

`aeg-event-type` says what the request is: `SubscriptionValidation` (answer `{"validationResponse": code}`),
`Notification` (events to dispatch, one invocation each, in order), `SubscriptionDeletion`/`Unsubscribe`
(acknowledge). Without it the request is refused with 400, as the extension does. A Notification body is a
JSON array of Event Grid schema events, or CloudEvents 1.0: one object (`application/cloudevents+json`) or
an array (`application/cloudevents-batch+json`); `specversion` tells the two schemas apart, per event.

Each event reaches the function as a `func.EventGridEvent` (id, topic, subject, event_type, event_time,
data_version, data); a CloudEvent's source, type and time fill topic, event_type and event_time. A function
whose trigger parameter is annotated `func.CloudEvent` gets a `func.CloudEvent` instead. (The Python worker
itself decodes a CloudEvents body to `func.CloudEvent` whatever the annotation; see docs/local-host.md.)

Pure. No I/O.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import azure.functions as func

VALIDATION, NOTIFICATION = "SubscriptionValidation", "Notification"
DELETION = frozenset({"SubscriptionDeletion", "Unsubscribe"})
_CLOUD_KNOWN = frozenset({"specversion", "id", "source", "type", "time", "subject", "datacontenttype",
                          "dataschema", "data", "data_base64"})


class BadRequest(Exception):
    """The request cannot be understood (HTTP 400); the message says why without echoing the body."""


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """A webhook body -> its events (Event Grid schema or CloudEvents), in the order sent."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not JSON") from None
    items = document if isinstance(document, list) else [document]
    if not items or not all(isinstance(item, dict) for item in items):
        raise BadRequest("the body is not a JSON object or an array of JSON objects")
    return items


def validation_code(items: list[dict[str, Any]]) -> str:
    data = items[0].get("data")
    code = data.get("validationCode") if isinstance(data, dict) else None
    if not isinstance(code, str) or not code:
        raise BadRequest("a SubscriptionValidation event carries data.validationCode")
    return code


def is_cloud_event(item: dict[str, Any]) -> bool:
    return "specversion" in item


def to_trigger(item: dict[str, Any], *, cloud_event_parameter: bool = False) -> func.EventGridEvent | func.CloudEvent:
    """One event -> what the function receives (see the module's docstring)."""
    if is_cloud_event(item):
        if cloud_event_parameter:
            extensions = {k: v for k, v in item.items() if k not in _CLOUD_KNOWN}
            return func.CloudEvent(id=item.get("id"), source=item.get("source"), type=item.get("type"),
                                   specversion=item.get("specversion"), time=_time(item.get("time")),
                                   subject=item.get("subject"), datacontenttype=item.get("datacontenttype"),
                                   dataschema=item.get("dataschema"), data=item.get("data"), **extensions)
        return func.EventGridEvent(id=item.get("id"), data=item.get("data"), topic=item.get("source"),
                                   subject=item.get("subject"), event_type=item.get("type"),
                                   event_time=_time(item.get("time")), data_version=item.get("dataversion") or "")
    return func.EventGridEvent(id=item.get("id"), data=item.get("data"), topic=item.get("topic"),
                               subject=item.get("subject"), event_type=item.get("eventType"),
                               event_time=_time(item.get("eventTime")), data_version=item.get("dataVersion"))


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        return None
