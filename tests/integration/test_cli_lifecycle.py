"""The real `shipbot up`, twice, on the real local stack: the first brings up whatever is missing (the
script's daemons, the local host) and waits until the host answers with its master key; the second finds
everything answering and returns with the same host.

It uses the real state directory and port 7071, as an operator would. A host that this test started is
stopped afterwards (only the host: the daemons are shared with every other test and engineer). Skipped until
the local host (stack/host.py) exists. Starting and purging environment containers is exercised on a
container of the test's own. End-to-end tests of the API verbs belong to the engine's suite.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest

from stack import lifecycle

ROOT = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 600  # a fresh machine installs packages, Azurite and builds the base image first

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (ROOT / "stack" / "host.py").exists(), reason="the local host (stack/host.py) is not here"),
]


def shipbot(*argv: str) -> subprocess.CompletedProcess[str]:
    """The console script when `make setup` installed it, else the module it runs."""
    script = Path(sys.executable).parent / "shipbot"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*command, *argv], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=UP_TIMEOUT_S + 60)


@pytest.fixture
def stack():
    stack = lifecycle.Stack(state=Path(os.environ.get("SHIPBOT_STATE") or "/var/lib/shipbot"))
    ours = lifecycle.host_pid(stack) is None and not lifecycle.host_answers(stack)
    yield stack
    if ours:
        lifecycle.stop_host(stack)


def test_shipbot_up_twice_starts_one_host_and_the_second_returns_at_once(stack):
    t0 = time.monotonic()
    first = shipbot("up", "--timeout", str(UP_TIMEOUT_S))
    first_s = time.monotonic() - t0
    assert first.returncode == 0, first.stderr[-3000:]
    assert "ShipBot is up" in first.stdout and "http://127.0.0.1:7071/api" in first.stdout
    pid = lifecycle.host_pid(stack)
    assert pid is not None, "no live host behind $SHIPBOT_STATE/host.pid"

    master = lifecycle.host_key(stack.state, "master")
    status = httpx.get(f"{stack.url}/admin/host/status", headers={"x-functions-key": master}, timeout=5)
    assert status.status_code == 200
    assert httpx.get(f"{stack.url}/admin/host/status", timeout=5).status_code in (401, 403)  # the key matters
    config = (stack.state / "registry" / "config.yml").read_text()
    assert stack.bridge_url in config  # the registry tells the host's event bridge about pushes

    t1 = time.monotonic()
    second = shipbot("up")
    second_s = time.monotonic() - t1
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"host already running, pid {pid}" in second.stdout
    assert lifecycle.host_pid(stack) == pid
    print(f"shipbot up: first {first_s:.1f} s, second {second_s:.1f} s")


def test_up_starts_a_stopped_environment_container_and_purge_removes_it(docker_client):
    name = f"shipbot-test-env-{uuid.uuid4().hex[:8]}"  # never the real environments: others use them
    container = docker_client.containers.create("python:3.11-slim", ["sleep", "300"], name=name)
    try:
        assert lifecycle.start_environments((name,)) == [f"started {name} again"]
        container.reload()
        assert container.status == "running"
        assert lifecycle.start_environments((name,)) == []  # a running one is left alone
        assert lifecycle.remove_environments((name,)) == [f"removed {name}"]
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(name)
        assert lifecycle.remove_environments((name,)) == []  # idempotent
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True)
