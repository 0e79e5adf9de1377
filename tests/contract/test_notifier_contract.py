"""The Notifier port's contract, run against every adapter of it, and what WebhookNotifier owes on top: the
incoming-webhook JSON, never failing the caller, never logging its URL (a secret). The webhook receiver is a
real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import importlib.util
import json
import logging
import queue
import threading
from collections.abc import Iterator

import pytest

from shared.adapters import notifiers

HAS_MEMORY = importlib.util.find_spec("shared.adapters.memory") is not None
SECRET_PATH = "/services/T000/B000/s3cr3t-t0ken"


class Receiver(http.server.ThreadingHTTPServer):
    """Records each POST body; answers `status`; holds its answer while `hold` is clear."""

    def __init__(self) -> None:
        self.bodies: queue.Queue[dict] = queue.Queue()
        self.status = 200
        self.hold = threading.Event()
        self.hold.set()
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{SECRET_PATH}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.hold.wait(10)
        self.server.bodies.put(body)
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.hold.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(params=[
    "log", "webhook",
    pytest.param("memory", marks=pytest.mark.skipif(not HAS_MEMORY, reason="shared/adapters/memory.py missing")),
])
def notifier(request, receiver):
    if request.param == "log":
        return notifiers.LogNotifier()
    if request.param == "webhook":
        return notifiers.WebhookNotifier(url=receiver.url)
    from shared.adapters import memory

    return memory.MemoryNotifier()


@pytest.mark.parametrize("failed", [False, True])
def test_notify_takes_a_subject_and_a_text_and_returns_nothing(notifier, failed):
    assert notifier.notify("r-1 is green", "smoke test passed in 3.2 s", failed=failed) is None


# -- LogNotifier ------------------------------------------------------------------------------------------
def test_log_notifier_writes_one_record_with_its_fields_in_extra(caplog):
    with caplog.at_level(logging.INFO, logger="shared.adapters.notifiers"):
        notifiers.LogNotifier().notify("staging rollout failed", "r-2 did not become ready", failed=True)

    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.notification == {"subject": "staging rollout failed", "text": "r-2 did not become ready",
                                   "failed": True}


# -- WebhookNotifier --------------------------------------------------------------------------------------
def test_webhook_posts_incoming_webhook_json_with_subject_and_text(receiver):
    notifiers.WebhookNotifier(url=receiver.url).notify("r-1 on production", "promoted by the nightly timer")

    body = receiver.bodies.get(timeout=5)
    assert list(body) == ["text"]
    assert "r-1 on production" in body["text"] and "promoted by the nightly timer" in body["text"]


@pytest.mark.parametrize("status", [400, 404, 500])
def test_a_refused_webhook_is_logged_without_its_url_and_does_not_raise(receiver, caplog, status):
    receiver.status = status
    with caplog.at_level(logging.DEBUG):
        notifiers.WebhookNotifier(url=receiver.url).notify("subject", "text", failed=True)

    assert receiver.bodies.get(timeout=5)
    assert f"HTTP {status}" in caplog.text
    assert SECRET_PATH not in caplog.text and "s3cr3t" not in caplog.text


def test_an_unreachable_webhook_is_logged_without_its_url_and_does_not_raise(caplog, receiver):
    url = receiver.url
    receiver.shutdown()
    receiver.server_close()  # nothing listens on that port now
    with caplog.at_level(logging.DEBUG):
        notifiers.WebhookNotifier(url=url).notify("subject", "text")

    assert "not delivered: ConnectError" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_a_slow_webhook_times_out_without_holding_the_release_up(receiver, caplog):
    receiver.hold.clear()
    with caplog.at_level(logging.DEBUG):
        notifiers.WebhookNotifier(url=receiver.url, timeout_seconds=0.3).notify("subject", "text")

    assert "not delivered: ReadTimeout" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_the_url_stays_out_of_repr_and_of_the_error_for_a_bad_url():
    assert "s3cr3t" not in repr(notifiers.WebhookNotifier(url=f"https://hooks.example{SECRET_PATH}"))
    with pytest.raises(ValueError) as raised:
        notifiers.WebhookNotifier(url=f"ftp://hooks.example{SECRET_PATH}")
    assert "s3cr3t" not in str(raised.value)
