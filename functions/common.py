"""What every trigger shares: the engine (built once, lazily, from settings), JSON answers, error mapping.

Only functions/ decides between answering and re-raising. For HTTP: InvalidEvent -> 400 (401 when
unauthenticated, 413 when too large), NotFound -> 404, Exists/Refused/PermanentError -> 409, TransientError ->
503, anything else -> 500 with a generic message (the details go to the log, never to the caller). For Event
Grid and the queue, a TransientError re-raises so that the delivery is retried; an InvalidEvent is logged
and acknowledged.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import typing
from typing import Any

import azure.functions as func

from shared import errors, events, wiring
from shared.bot import Bot, Routed
from shared.engine import Engine, Outcome
from shared.settings import Settings

# A queue output of job messages. typing.List, not list[str]: the Python worker refuses a builtin generic
# here ("invalid non-type annotation") and then indexes no function at all.
Jobs = func.Out[typing.List[str]]  # noqa: UP006

log = logging.getLogger("shipbot.functions")

MAX_API_BODY = 64 * 1024
JOBS_QUEUE = "%SHIPBOT_JOBS_QUEUE%"  # a binding expression: the app setting names the queue (shipbot-jobs)


@functools.cache
def settings() -> Settings:
    return Settings.from_env(os.environ)


@functools.cache
def bot() -> Bot:
    return wiring.bot(settings())


def engine(req: func.HttpRequest | None = None) -> Engine:
    """The engine of the application a request names (`?app=`), or of the only one (404 otherwise)."""
    name = req.params.get("app") if req is not None else None
    return bot().engine(name or None)


def enqueue(out: Jobs, outcome: Outcome | Routed) -> None:
    if outcome.jobs:
        out.set([job.to_message() for job in outcome.jobs])


def routed(what: str, outcome: Routed) -> None:
    """Logs what a trigger did across the fleet; one application's failure is logged (reconcile repairs it)."""
    log.info("%s: %s (%d jobs)", what, outcome.summary, len(outcome.jobs))
    if outcome.failure is not None:
        log.warning("%s: an application failed and is left to reconcile: %s: %s", what,
                    type(outcome.failure).__name__, outcome.failure)


def event_grid_envelope(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """The envelope as Event Grid sent it, rebuilt from the binding's fields for shared.events. The Python
    worker hands a CloudEvents 1.0 delivery over as func.CloudEvent, whatever the annotation says."""
    if isinstance(event, func.CloudEvent) or hasattr(event, "specversion"):
        return {"specversion": event.specversion, "id": event.id, "source": event.source, "type": event.type,
                "time": event.time.isoformat() if event.time else None, "subject": event.subject,
                "data": event.get_json()}
    return {"id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
            "eventTime": event.event_time.isoformat() if event.event_time else None,
            "dataVersion": event.data_version, "data": event.get_json()}


def handle_event(parse, event: func.EventGridEvent, jobs_out: Jobs) -> None:
    """Parse, hand to the engine, enqueue its jobs. Bad payloads are logged and acknowledged; a transient
    failure raises so that Event Grid redelivers."""
    try:
        domain_event = parse(event_grid_envelope(event))
    except errors.InvalidEvent as e:
        log.warning("event %s dropped: %s", event.id, e)
        return
    outcome = bot().handle(domain_event)
    routed(f"event {event.id}", outcome)
    enqueue(jobs_out, outcome)


def answer(status: int, doc: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(doc, separators=(",", ":")), status_code=status,
                             mimetype="application/json")


def error(status: int, code: str, message: str) -> func.HttpResponse:
    return answer(status, {"error": {"code": code, "message": message}})


def http_errors(handler):
    """Maps shared.errors raised by an HTTP handler to JSON answers."""
    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest, *args, **kwargs) -> func.HttpResponse:
        try:
            response = handler(req, *args, **kwargs)
        except errors.ReleaseError as e:
            response = _error_response(e)
            log.warning("%s %s: %d %s", req.method, handler.__name__, response.status_code, e)
            return response
        except Exception:
            log.exception("unexpected failure in %s", handler.__name__)
            return error(500, "internal", "internal error; the host log has the details")
        return response
    return wrapper


# Most specific first: the first class that matches decides.
STATUS = ((events.Unauthenticated, 401, "unauthenticated"), (events.TooLarge, 413, "too_large"),
          (errors.InvalidEvent, 400, "bad_request"), (errors.NotFound, 404, "not_found"),
          (errors.Exists, 409, "refused"), (errors.PermanentError, 409, "refused"),
          (errors.TransientError, 503, "unavailable"))


def _error_response(e: errors.ReleaseError) -> func.HttpResponse:
    for kind, status, code in STATUS:
        if isinstance(e, kind):
            response = {"code": code, "message": f"try again: {e}" if status == 503 else str(e)}
            if getattr(e, "problems", None):  # e.g. a fleet file's, each with its line and key
                response["problems"] = list(e.problems)
            return answer(status, {"error": response})
    return error(500, "internal", str(e))


def json_body(req: func.HttpRequest, *, optional: bool = True) -> dict[str, Any]:
    body = req.get_body() or b""
    if len(body) > MAX_API_BODY:
        raise events.TooLarge(f"body is too large: {len(body)} bytes, the limit is {MAX_API_BODY}")
    if not body.strip():
        if optional:
            return {}
        raise errors.InvalidEvent("the body must be a JSON object")
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise errors.InvalidEvent(f"the body is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidEvent("the body must be a JSON object")
    return doc


def field(doc: dict[str, Any], name: str, kind: type = str, *, default: Any = None) -> Any:
    value = doc.get(name, default)
    if value is not None and not isinstance(value, kind):
        raise errors.InvalidEvent(f"{name} must be a {kind.__name__}")
    return value


def actor(req: func.HttpRequest) -> str:
    """Who asked: the CLI sends x-shipbot-actor; the key itself is never recorded."""
    name = (req.headers.get("x-shipbot-actor") or "api").strip()
    return "".join(c for c in name if c.isprintable())[:100] or "api"
