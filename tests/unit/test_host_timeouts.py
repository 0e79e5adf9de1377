"""The host's two clocks: functionTimeout ends an invocation, and Azure's HTTP front end gives up at 230 s.

Each is shortened here through HostOptions, as host.json (functionTimeout) would set it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from datetime import timedelta
from pathlib import Path

import azure.functions as func
import httpx
import pytest

from stack import config, functions
from stack.functions import FunctionTimeout, Invoker
from stack.host import Host
from stack.keys import HostKeys
from stack.testing import eventually, serving

KEYS = HostKeys(master="master-key-0123456789", function_keys={"default": "function-key-0123456789"},
                system_keys={"eventgrid_extension": "system-key-0123456789"})


class Slow:
    """An app whose one route waits at a gate the test opens, then records that it finished."""

    def __init__(self) -> None:
        self.gate, self.finished = threading.Event(), threading.Event()

    def app(self) -> func.FunctionApp:
        app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

        @app.route(route="slow")
        def slow(req: func.HttpRequest) -> func.HttpResponse:
            assert self.gate.wait(20), "the test never opened the gate"
            self.finished.set()
            return func.HttpResponse("done")

        return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(slow: Slow, tmp_path: Path, options: config.HostOptions):
    port = free_port()
    host = Host(slow.app(), settings={}, state_dir=tmp_path / "state", folder=tmp_path,
                url=f"http://127.0.0.1:{port}", host_keys=KEYS, workers=2, options=options)
    return serving(host, port=port)


def test_an_http_function_past_its_timeout_is_500_and_the_host_says_so(tmp_path: Path, caplog) -> None:
    slow = Slow()
    with caplog.at_level(logging.ERROR, logger="stack.functions"), \
            serve(slow, tmp_path, config.HostOptions(function_timeout=timedelta(seconds=1))) as base:
        assert httpx.get(f"{base}/api/slow", timeout=30).status_code == 500
        assert not slow.finished.is_set()
        slow.gate.set()
    assert any(record.getMessage().startswith("Timeout value of 00:00:01 exceeded by function 'Functions.slow' "
                                              "(Id: '") and record.getMessage().endswith("Initiating cancellation.")
               for record in caplog.records)


def test_the_front_end_answers_502_at_its_limit_while_the_invocation_goes_on(tmp_path: Path) -> None:
    slow = Slow()
    options = config.HostOptions(front_end_timeout=timedelta(seconds=0.5))
    with serve(slow, tmp_path, options) as base:
        assert httpx.get(f"{base}/api/slow", timeout=30).status_code == 502
        assert not slow.finished.is_set()
        slow.gate.set()
        eventually(slow.finished.is_set, what="the invocation to run to its end after the 502")


def test_outputs_set_after_the_timeout_are_never_sent() -> None:
    app = func.FunctionApp()
    gate, done, sent = threading.Event(), threading.Event(), []

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    @app.queue_output(arg_name="out", queue_name="out", connection="S")
    def late(msg: func.QueueMessage, out: func.Out[str]) -> None:
        gate.wait(20)
        out.set("too late")
        done.set()

    invoker = Invoker(send_queue=lambda binding, bodies: sent.append(bodies), timeout=timedelta(seconds=0.2))
    with pytest.raises(FunctionTimeout, match="Timeout value of 00:00:00.2000000 was exceeded by function: "
                                              "Functions.late"):
        invoker.invoke(functions.index(app)["late"], func.QueueMessage(body=b"x"))
    gate.set()
    eventually(done.is_set, what="the function to run on to its end")
    assert sent == []


def test_a_timeout_error_the_function_raises_is_its_own_failure_not_a_function_timeout(tmp_path: Path) -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    def reads(msg: func.QueueMessage) -> None:
        raise TimeoutError("socket read timed out")

    invoker = Invoker(send_queue=lambda binding, bodies: None, timeout=timedelta(seconds=30))
    with pytest.raises(TimeoutError, match="socket read timed out"):
        invoker.invoke(functions.index(app)["reads"], func.QueueMessage(body=b"x"))


def test_an_http_function_raising_timeout_error_is_500_not_502(tmp_path: Path) -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="flaky")
    def flaky(req: func.HttpRequest) -> func.HttpResponse:
        raise TimeoutError("upstream timed out")

    port = free_port()
    host = Host(app, settings={}, state_dir=tmp_path / "state", folder=tmp_path, url=f"http://127.0.0.1:{port}",
                host_keys=KEYS, workers=2, options=config.HostOptions(function_timeout=None))
    with serving(host, port=port) as base:
        assert httpx.get(f"{base}/api/flaky", timeout=30).status_code == 500


def test_a_function_within_its_timeout_returns_normally() -> None:
    app = func.FunctionApp()
    sent = []

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    @app.queue_output(arg_name="out", queue_name="out", connection="S")
    def quick(msg: func.QueueMessage, out: func.Out[str]) -> None:
        out.set(msg.get_body().decode())

    Invoker(send_queue=lambda binding, bodies: sent.append(bodies), timeout=timedelta(seconds=30)).invoke(
        functions.index(app)["quick"], func.QueueMessage(body=b"in time"))
    assert sent == [[b"in time"]]


@pytest.mark.parametrize(("value", "expected"), [(None, timedelta(minutes=30)), ("-1", None),
                                                 ("00:00:01", timedelta(seconds=1)),
                                                 ("02:00:00", timedelta(hours=2))])
def test_function_timeout_defaults_to_flex_consumptions_and_minus_one_is_unbounded(tmp_path: Path, value,
                                                                                   expected) -> None:
    doc = {"version": "2.0"} | ({} if value is None else {"functionTimeout": value})
    (tmp_path / "host.json").write_text(json.dumps(doc))
    assert config.HostOptions.read(tmp_path).function_timeout == expected


def test_a_function_timeout_under_a_second_is_refused_with_the_hosts_words(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "functionTimeout": "00:00:00.5"}))
    with pytest.raises(config.ConfigError, match=r"^FunctionTimeout must be greater than 00:00:01 and less than "
                                                 r"10675199\.02:48:05\.4775807\.$"):
        config.HostOptions.read(tmp_path)
