"""Telemetry: JSON log lines, and Prometheus metrics that add up across the server's worker processes.

Every worker writes its own access log lines with one write(2) each, so lines from two processes never
interleave on a shared pipe. Metrics use prometheus_client's multiprocess mode whenever
PROMETHEUS_MULTIPROC_DIR is set (the server sets it before it starts workers), so /metrics answers for the
whole server, not for whichever worker took the scrape.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest, multiprocess

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
# uvicorn's color_message duplicates message with terminal escapes.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


def utc_timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, any `extra=` fields, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": utc_timestamp(record.created), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        doc.update((k, v) for k, v in vars(record).items() if k not in _RECORD_FIELDS)
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLog:
    """One JSON line per request, written straight to a file descriptor (stdout by default)."""

    def __init__(self, fd: int = 1, *, enabled: bool = True) -> None:
        self.fd, self.enabled = fd, enabled

    def write(self, fields: dict[str, Any]) -> None:
        if self.enabled:
            fields["time"] = utc_timestamp(time.time())
            os.write(self.fd, orjson.dumps(fields) + b"\n")


# Seconds; spans a fast single-row score (~0.1 ms) to a slow batch. Fixed, because every process must agree.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("model_api_requests_total", "HTTP requests answered.", ["route", "method", "status"])
LATENCY = Histogram("model_api_request_duration_seconds", "Time to answer an HTTP request.", ["route"],
                    buckets=BUCKETS)
BATCH = Histogram("model_api_batch_requests", "Requests scored together by one run_batch() call.",
                  buckets=(1, 2, 4, 8, 16, 32, 64, 128))
MODEL_LOAD = Gauge("model_api_model_load_seconds", "Time the entry script's init() took.",
                   multiprocess_mode="max")
MODEL_READY = Gauge("model_api_model_ready", "1 when the model is loaded and warmed up.",
                    multiprocess_mode="livemin")


class Metrics:
    """Records requests; labelled children are cached, since .labels() takes a lock on every call."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[str, Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = REQUESTS.labels(route, method, str(status))
        counter.inc()
        histogram = self._histograms.get(route)
        if histogram is None:
            histogram = self._histograms[route] = LATENCY.labels(route)
        histogram.observe(seconds)

    @staticmethod
    def batch(requests: int) -> None:
        BATCH.observe(requests)

    @staticmethod
    def model_loaded(load_seconds: float | None, ready: bool) -> None:
        if load_seconds is not None:
            MODEL_LOAD.set(load_seconds)
        MODEL_READY.set(1 if ready else 0)

    @staticmethod
    def exposition() -> tuple[bytes, str]:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
