"""Helpers for tests that run a FunctionApp on the local host: a real server on a real port, in-process.

    host = Host(app, settings={...}, state_dir=tmp_path, url=f"http://127.0.0.1:{port}")
    with serving(host, port=port) as base_url:
        httpx.get(f"{base_url}/api/...")

`serving` runs uvicorn on a background thread (lifespan on, so the host's timers, queue pollers and bridge
start and stop with it) and returns once the socket listens. `eventually(check)` polls a condition until a
deadline, for what happens on another thread or process (never a bare sleep).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import uvicorn

from stack.host import Host
from stack.server import MAX_BODY, Server

T = TypeVar("T")


@contextmanager
def serving(host: Host, *, port: int, max_body: int = MAX_BODY, timeout: float = 30.0) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(Server(host, max_body=max_body), host="127.0.0.1", port=port, lifespan="on",
                                           access_log=False, log_config=None, timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    eventually(lambda: server.started or not thread.is_alive(), timeout=timeout, what="the server to listen")
    if not server.started:
        raise RuntimeError("the local host did not start (see its log)")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


def eventually(check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll `check` until it returns something truthy (returned) or `timeout` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what or check}")
        time.sleep(interval)
