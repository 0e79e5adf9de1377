"""The host's log: one JSON object a line on stderr, for the host's own records and the functions' `logging`.

Every invocation writes one line through `invocation()` (function, trigger, invocation id, duration, outcome),
and a function's own log records carry the id of the invocation they belong to (a context variable that the
invoker sets in the worker thread). Redaction happens on the finished line, so nothing slips past it: the
host's keys and shared secrets by value, and anything shaped like `code=`, `sig=`, `AccountKey=`,
`SharedAccessSignature=` or an Authorization header by pattern.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime

invocation_id: ContextVar[str | None] = ContextVar("invocation_id", default=None)
INVOCATIONS = logging.getLogger("stack.invocations")

_SHAPES = re.compile(
    r"(?i)(\b(?:code|sig|signature|key|secret|token|password|accountkey|sharedaccesssignature)=)[^&\s;\"',]+"
    r"|(\b(?:authorization|x-functions-key)[\"']?\s*[:=]\s*[\"']?)[^\"',}\r\n]+")


class Redactor:
    """str -> str with every known secret and every secret-shaped parameter replaced by `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def add(self, *secrets: str) -> None:
        self._secrets = sorted({*self._secrets, *(s for s in secrets if s and len(s) >= 8)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _SHAPES.sub(lambda m: (m[1] or m[2]) + "***", text)


class JsonFormatter(logging.Formatter):
    """A record -> one JSON line: time, level, logger, message, invocation_id, the record's `fields`, error."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "invocation_id", None) or invocation_id.get()
        if current:
            doc["invocation_id"] = current
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["error"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return self.redact(json.dumps(doc, default=str, ensure_ascii=False))


def configure(redact: Redactor, *, level: int = logging.INFO) -> None:
    """Send every record of this process to stderr as JSON lines (replaces the root logger's handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDK's HTTP logging policy prints request lines and headers at INFO: noise, and URLs carry SAS.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request: the bridge polls MLflow every second
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def invocation(*, function: str, trigger: str, invocation: str, duration_ms: float, outcome: str,
               error: BaseException | None = None) -> None:
    """The one line each invocation writes; a failure carries the exception and its traceback."""
    fields = {"function": function, "trigger": trigger, "invocation_id": invocation,
              "duration_ms": round(duration_ms, 1), "outcome": outcome}
    if error is not None:
        fields["exception"] = f"{type(error).__name__}: {error}"
    INVOCATIONS.log(logging.INFO if error is None else logging.WARNING, "invocation %s of %s %s", invocation,
                    function, outcome, extra={"fields": fields},
                    exc_info=(type(error), error, error.__traceback__) if error is not None else None)
