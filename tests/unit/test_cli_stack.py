"""stack.lifecycle with real processes and a stand-in checkout: `up` starts a detached host once, waits for
its status with the master key and returns at once the second time; `down` stops it; a host that dies or
ignores SIGTERM is handled.

The stand-in checkout (a tmp dir) has a `scripts/local-stack.sh` that only records its calls and a
`stack/host.py` that answers /admin/host/status like the real host, so these tests never touch the shared
daemons. tests/integration/test_cli_lifecycle.py runs the real `shipbot up`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stack import lifecycle

FAKE_SCRIPT = """#!/usr/bin/env bash
echo "$1 ${SHIPBOT_REGISTRY_NOTIFY_URL:-}" >>"$SHIPBOT_STATE/script.calls"
"""

FAKE_HOST = """
import argparse, json, os, pathlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
args = parser.parse_args()
keys = pathlib.Path(os.environ["SHIPBOT_STATE"]) / "host-keys.json"
master = os.environ.get("FAKE_HOST_MASTER") or json.loads(keys.read_text())["master"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/admin/host/status" and self.headers.get("x-functions-key") == master
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


print("fake host listening", flush=True)
ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
"""

DYING_HOST = """
import sys
print("boom: SHIPBOT_STORAGE names no storage account", flush=True)
sys.exit(3)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    """No such process, or only its zombie (the host was this test process's child)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def checkout(tmp_path: Path, host_source: str) -> lifecycle.Stack:
    root, state = tmp_path / "root", tmp_path / "state"
    (root / "scripts").mkdir(parents=True)
    (root / "stack").mkdir()
    (root / "scripts" / "local-stack.sh").write_text(FAKE_SCRIPT)
    (root / "stack" / "__init__.py").write_text("")
    (root / "stack" / "host.py").write_text(host_source)
    state.mkdir()
    (state / "host-keys.json").write_text(json.dumps({"master": "m-key", "functionKeys": {"default": "f-key"}}))
    return lifecycle.Stack(state=state, port=free_port(), root=root, environ={"PATH": os.environ["PATH"]},
                           environments=())


@pytest.fixture
def stacks():
    """Stops every host a test started, whatever the test did."""
    started: list[lifecycle.Stack] = []
    yield started.append
    for stack in started:
        lifecycle.stop_host(stack, timeout_s=5)


def test_up_starts_the_host_once_and_down_stops_it(tmp_path, stacks):
    stack = checkout(tmp_path, FAKE_HOST)
    stacks(stack)
    first = lifecycle.up(stack, timeout_s=30)
    assert first.started and first.pid == int(stack.pid_file.read_text())
    assert lifecycle.host_answers(stack)
    assert "fake host listening" in stack.log_file.read_text()
    assert os.getpgid(first.pid) == first.pid  # a session of its own: outlives the CLI, signalled as a group

    second = lifecycle.up(stack, timeout_s=30)
    assert (second.started, second.pid) == (False, first.pid)

    lifecycle.down(stack)
    assert not stack.pid_file.exists() and not lifecycle.host_answers(stack)
    assert gone(first.pid)
    calls = (stack.state / "script.calls").read_text().splitlines()
    assert calls == [f"up {stack.bridge_url}"] * 2 + [f"down {stack.bridge_url}"]
    assert stack.bridge_url == f"http://127.0.0.1:{stack.port}/runtime/bridge/registry"


def test_up_reports_a_host_that_exits_while_starting_with_the_end_of_its_log(tmp_path, stacks):
    stack = checkout(tmp_path, DYING_HOST)
    stacks(stack)
    with pytest.raises(lifecycle.StackError) as raised:
        lifecycle.up(stack, timeout_s=30)
    assert "exited while starting" in str(raised.value)
    assert "boom: SHIPBOT_STORAGE names no storage account" in str(raised.value)
    assert not stack.pid_file.exists()


def test_up_gives_up_at_its_deadline_when_the_host_never_answers(tmp_path, stacks):
    stack = dataclasses.replace(checkout(tmp_path, FAKE_HOST),
                                environ={"PATH": os.environ["PATH"], "FAKE_HOST_MASTER": "not-in-the-keys-file"})
    stacks(stack)
    with pytest.raises(lifecycle.StackError) as raised:
        lifecycle.up(stack, timeout_s=1)
    assert "did not answer" in str(raised.value) and "within 1s" in str(raised.value)


# A script that starts what is not running (a sleeping stand-in per daemon, with its pid file, as the real
# one does) and stops the parts it is told to; FAIL_AT makes `up` fail after starting the parts before it.
STARTING_SCRIPT = """#!/usr/bin/env bash
echo "$*" >>"$SHIPBOT_STATE/script.calls"
case $1 in
  up)
    for part in registry azurite; do
      [[ $part == "${FAIL_AT:-}" ]] && exit 1
      pid=$(cat "$SHIPBOT_STATE/$part.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && continue
      setsid sleep 300 </dev/null >/dev/null 2>&1 &
      echo $! >"$SHIPBOT_STATE/$part.pid"
    done ;;
  stop) shift; for part; do kill "$(cat "$SHIPBOT_STATE/$part.pid")"; rm "$SHIPBOT_STATE/$part.pid"; done ;;
esac
"""


def daemon_pid(stack: lifecycle.Stack, part: str) -> int | None:
    try:
        return int((stack.state / f"{part}.pid").read_text())
    except FileNotFoundError:
        return None


@pytest.fixture
def sleepers():
    """Kills the stand-in daemons a test left."""
    pids: list[int] = []
    yield pids.append
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_failed_up_stops_what_it_started_and_leaves_what_ran_before(tmp_path, stacks, sleepers):
    stack = dataclasses.replace(checkout(tmp_path, DYING_HOST),
                                environ={"PATH": os.environ["PATH"], "SHIPBOT_GIT_REPO": str(tmp_path / "app.git")})
    (stack.root / "scripts" / "local-stack.sh").write_text(STARTING_SCRIPT)
    stacks(stack)
    before = subprocess.Popen(["sleep", "300"], start_new_session=True)  # the registry, running already
    sleepers(before.pid)
    (stack.state / "registry.pid").write_text(f"{before.pid}\n")
    with pytest.raises(lifecycle.StackError, match="exited while starting"):
        lifecycle.up(stack, timeout_s=30)
    calls = (stack.state / "script.calls").read_text().splitlines()
    assert calls == ["up", "stop azurite"]  # the one this start began, and only it
    assert daemon_pid(stack, "azurite") is None and before.poll() is None and daemon_pid(stack, "registry") == before.pid
    assert not (tmp_path / "app.git").exists()  # the app repository it created is gone again
    assert not stack.pid_file.exists()


@pytest.mark.parametrize(("environ", "timeout_s", "error", "stopped"), [
    ({"FAIL_AT": "azurite"}, 30, "local-stack.sh up failed", "stop registry"),  # the script fails halfway
    ({"FAKE_HOST_MASTER": "not-in-the-keys-file"}, 1, "did not answer", "stop azurite registry"),  # deadline
])
def test_an_up_that_fails_stops_the_daemons_and_the_host_it_started(tmp_path, stacks, sleepers, environ, timeout_s,
                                                                    error, stopped):
    stack = dataclasses.replace(checkout(tmp_path, FAKE_HOST), environ={"PATH": os.environ["PATH"], **environ})
    (stack.root / "scripts" / "local-stack.sh").write_text(STARTING_SCRIPT)
    stacks(stack)
    with pytest.raises(lifecycle.StackError, match=error):
        lifecycle.up(stack, timeout_s=timeout_s)
    assert (stack.state / "script.calls").read_text().splitlines() == ["up", stopped]
    assert daemon_pid(stack, "registry") is None and daemon_pid(stack, "azurite") is None
    assert lifecycle.host_pid(stack) is None and not stack.pid_file.exists()


def host_like(tmp_path: Path, code: str) -> subprocess.Popen[str]:
    """A process whose command line names stack.host, started as `up` starts the host; ready when it says so."""
    process = subprocess.Popen([sys.executable, "-c", f"# stack.host stand-in\n{code}"], stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    assert process.stdout.readline().strip() == "ready"
    (tmp_path / "host.pid").write_text(f"{process.pid}\n")
    return process


def test_stop_host_kills_a_host_that_ignores_sigterm_after_the_deadline(tmp_path):
    process = host_like(tmp_path, "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                  "print('ready', flush=True)\nwhile True: time.sleep(60)")
    try:
        assert lifecycle.stop_host(lifecycle.Stack(state=tmp_path), timeout_s=0.5)
        assert process.wait(timeout=5) == -signal.SIGKILL
        assert not (tmp_path / "host.pid").exists()
    finally:
        if process.poll() is None:
            process.kill()


def test_stop_host_leaves_alone_a_process_that_is_not_the_host(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True)\nimport time\ntime.sleep(60)"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        (tmp_path / "host.pid").write_text(f"{process.pid}\n")  # a recycled pid
        assert not lifecycle.stop_host(lifecycle.Stack(state=tmp_path), timeout_s=0.5)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(("doc", "master", "default"), [
    ({"master": "m", "functionKeys": {"default": "d"}, "systemKeys": {}}, "m", "d"),   # stack/keys.py's file
    ({"masterKey": {"name": "master", "value": "m"}, "functionKeys": [{"name": "default", "value": "d"}]}, "m", "d"),
    ({"functionKeys": {}}, None, None),
])
def test_host_key_reads_the_keys_file(tmp_path, doc, master, default):
    (tmp_path / "host-keys.json").write_text(json.dumps(doc))
    assert lifecycle.host_key(tmp_path, "master") == master
    assert lifecycle.host_key(tmp_path, "default") == default


def test_host_key_is_none_without_a_keys_file(tmp_path):
    assert lifecycle.host_key(tmp_path / "missing", "default") is None
