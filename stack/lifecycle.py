"""The local stack's lifecycle: `shipbot up` and `shipbot down`.

`up` is idempotent and returns at once when everything answers. It runs `scripts/local-stack.sh up` (Debian
packages, the Docker engine, the registry with its push notifications pointed at the host's event bridge,
Azurite, the base image: each step returns at once when its part answers), starts any environment container
that exists but was stopped (so `down` then `up` brings the environments back as they were), then starts the
local functions host `python -m stack.host --port PORT` as a detached process (its own session, stdout and
stderr to `$SHIPBOT_STATE/log/host.log`, its pid in `$SHIPBOT_STATE/host.pid`) unless one runs already, and
waits, with a deadline, until `GET /admin/host/status` answers 200 to the master key of
`$SHIPBOT_STATE/host-keys.json`.

`down` stops the host (SIGTERM to its process group, SIGKILL after a deadline), then the daemons the script
started (`scripts/local-stack.sh down`). Environment containers are left as they are (they stop with an
engine that the script started); `purge=True` removes them first.

Both hold a lock file in the state directory, so two `up`s at once start one host. Nothing here reads
os.environ: the CLI passes the environment the children get.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from stack import keys

ROOT = Path(__file__).resolve().parents[1]
HOST_MODULE = "stack.host"
ENVIRONMENT_CONTAINERS = ("shipbot-staging", "shipbot-production")
POLL_S = 0.25


class StackError(Exception):
    """The stack did not come up, or would not stop; the message says where to look."""


@dataclass(frozen=True, slots=True)
class Stack:
    """Where the local stack lives and how its children are started."""

    state: Path = Path("/var/lib/shipbot")
    port: int = 7071
    environ: Mapping[str, str] = field(default_factory=dict)  # the children's environment
    root: Path = ROOT  # the checkout: scripts/local-stack.sh, and the host's working directory
    python: str = sys.executable
    environments: tuple[str, ...] = ENVIRONMENT_CONTAINERS

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bridge_url(self) -> str:
        """Where the registry sends its push notifications: the host's event bridge."""
        return f"{self.url}/runtime/bridge/registry"

    @property
    def pid_file(self) -> Path:
        return self.state / "host.pid"

    @property
    def log_file(self) -> Path:
        return self.state / "log" / "host.log"

    @property
    def keys_file(self) -> Path:
        return self.state / "host-keys.json"

    @property
    def app_repo(self) -> Path:
        """The application's git repository (bare), unless SHIPBOT_GIT_REPO names another."""
        return Path(self.environ.get("SHIPBOT_GIT_REPO") or self.state / "app.git")

    def child_environ(self) -> dict[str, str]:
        env = dict(self.environ)
        env["SHIPBOT_STATE"] = str(self.state)
        env.setdefault("SHIPBOT_REGISTRY_NOTIFY_URL", self.bridge_url)
        env["SHIPBOT_GIT_REPO"] = str(self.app_repo)
        # The webhooks' shared secrets, made once per machine; the demo's git hook reads the same file.
        for name, file in (("SHIPBOT_GITHUB_SECRET", "github-webhook-secret"),
                           ("SHIPBOT_AZURE_DEVOPS_SECRET", "azure-devops-webhook-secret")):
            env[name] = keys.shared_secret(self.state / "secrets" / file, override=env.get(name))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH")]))
        return env


@dataclass(frozen=True, slots=True)
class Up:
    pid: int | None      # the host's, when we know it (a host started by hand writes no pid file)
    started: bool        # this call started the host
    seconds: float


def up(stack: Stack, *, timeout_s: float = 120.0, note: Callable[[str], None] = lambda text: None,
       progress: Callable[[str], None] = lambda text: None, script_output: TextIO | None = None) -> Up:
    """Starts whatever part of the local stack is not running, and waits until the host answers.

    `note` hears each step as it starts; `progress` hears what it waits for on every poll.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    with _locked(stack):
        note("the stack's daemons: scripts/local-stack.sh up")
        _script(stack, "up", output=script_output)
        for started_again in start_environments(stack.environments):
            note(started_again)
        _app_repository(stack)
        if host_answers(stack):
            return Up(host_pid(stack), False, time.monotonic() - t0)
        pid, started = host_pid(stack), False
        if pid is None:
            note(f"starting the host on {stack.url}, log in {stack.log_file}")
            pid, started = _spawn_host(stack), True
        while not host_answers(stack):
            if not _alive(pid):
                stack.pid_file.unlink(missing_ok=True)
                raise StackError(f"the host exited while starting; the end of {stack.log_file}:\n{_tail(stack)}")
            if time.monotonic() >= deadline:
                raise StackError(f"the host (pid {pid}) did not answer {stack.url}/admin/host/status within "
                                 f"{timeout_s:.0f}s; the end of {stack.log_file}:\n{_tail(stack)}")
            progress(f"waiting for the host on {stack.url}")
            time.sleep(POLL_S)  # nothing to wait on but the answer itself: poll it, bounded by the deadline
        return Up(pid, started, time.monotonic() - t0)


def down(stack: Stack, *, purge: bool = False, timeout_s: float = 20.0,
         note: Callable[[str], None] = lambda text: None, script_output: TextIO | None = None) -> None:
    """Stops the host, then the daemons that scripts/local-stack.sh started. `purge` also removes the
    environment containers (their releases stay in the ledger)."""
    with _locked(stack):
        stop_host(stack, timeout_s=timeout_s, note=note)
        if purge:
            for removed in remove_environments(stack.environments):
                note(removed)
        note("the stack's daemons: scripts/local-stack.sh down")
        _script(stack, "down", output=script_output)


def stop_host(stack: Stack, *, timeout_s: float = 20.0, note: Callable[[str], None] = lambda text: None) -> bool:
    """SIGTERM to the host's process group, SIGKILL after `timeout_s`. Whether a host was running."""
    pid = host_pid(stack)
    if pid is None:
        stack.pid_file.unlink(missing_ok=True)
        return False
    note(f"stopping the host (pid {pid})")
    _signal(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout_s):
        note(f"the host did not stop within {timeout_s:.0f}s: killing it")
        _signal(pid, signal.SIGKILL)
        if not _wait_gone(pid, 5.0):
            raise StackError(f"the host (pid {pid}) survived SIGKILL")
    stack.pid_file.unlink(missing_ok=True)
    return True


def host_pid(stack: Stack) -> int | None:
    """The pid in the pid file, if that process is alive and is our host (not a recycled pid)."""
    try:
        pid = int(stack.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and HOST_MODULE in _cmdline(pid) else None


def host_key(state: Path, name: str = "default") -> str | None:
    """A key of the local host from `host-keys.json`: "master", or a function key's name ("default").

    The file is stack/keys.py's, `{"master": ..., "functionKeys": {"default": ...}, ...}`; the functions host's
    secrets-file shapes (`"masterKey": {"value": ...}`, `"functionKeys": [{"name", "value"}]`) read too.
    None when there is none. Reads the file only: the host creates it.
    """
    try:
        doc = json.loads((state / "host-keys.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    if name == "master":
        return _value(doc.get("master") or doc.get("masterKey"))
    keys = doc.get("functionKeys")
    if isinstance(keys, dict):
        return _value(keys.get(name))
    if isinstance(keys, list):
        return next((_value(k) for k in keys if isinstance(k, dict) and k.get("name") == name), None)
    return None


def host_answers(stack: Stack) -> bool:
    key = host_key(stack.state, "master")
    if not key:
        return False
    try:
        response = httpx.get(f"{stack.url}/admin/host/status", headers={"x-functions-key": key}, timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def start_environments(names: tuple[str, ...] = ENVIRONMENT_CONTAINERS) -> list[str]:
    """Starts environment containers that exist but were stopped (by `down`, or an engine restart)."""
    return _each_container(names, lambda c: (c.start(), f"started {c.name} again")[1]
                           if c.status in ("created", "exited") else None)


def remove_environments(names: tuple[str, ...] = ENVIRONMENT_CONTAINERS) -> list[str]:
    return _each_container(names, lambda c: (c.remove(force=True), f"removed {c.name}")[1])


# -- helpers --------------------------------------------------------------------------------------------------
def _each_container(names: tuple[str, ...], action: Callable[[Any], str | None]) -> list[str]:
    if not names:
        return []
    import docker  # here, not at import: `shipbot status` needs no Docker SDK start-up
    import docker.errors

    notes = []
    try:
        client = docker.from_env()
        for name in names:
            try:
                note = action(client.containers.get(name))
            except docker.errors.NotFound:
                continue
            if note:
                notes.append(note)
    except docker.errors.DockerException as e:
        notes.append(f"environment containers untouched: the Docker engine said {e}")
    return notes


def _script(stack: Stack, verb: str, *, output: TextIO | None) -> None:
    out = output if output is not None else sys.stderr
    result = subprocess.run(["bash", str(stack.root / "scripts" / "local-stack.sh"), verb],
                            env=stack.child_environ(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                            check=False)
    if result.returncode != 0:
        raise StackError(f"scripts/local-stack.sh {verb} failed (exit {result.returncode}); its logs are in "
                         f"{stack.state / 'log'}")


def _app_repository(stack: Stack) -> None:
    """An empty bare repository for the app when there is none, so that the host has a source to read."""
    if not (stack.app_repo / "HEAD").exists():
        stack.app_repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(stack.app_repo)],
                       check=True, stdin=subprocess.DEVNULL)


def _spawn_host(stack: Stack) -> int:
    stack.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(stack.log_file, "ab") as log:
        # A session of its own: the host outlives this command and its terminal, and `down` can signal its
        # whole process group.
        process = subprocess.Popen([stack.python, "-m", HOST_MODULE, "--port", str(stack.port)],
                                   cwd=stack.root, env=stack.child_environ(), stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.returncode = 0  # never waited on: it is the daemon, and keeps running after we exit
    tmp = stack.pid_file.with_suffix(".tmp")
    tmp.write_text(f"{process.pid}\n")
    tmp.replace(stack.pid_file)
    return process.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own child that exited) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal(pid: int, signum: int) -> None:
    try:
        if os.getpgid(pid) == pid:  # the leader of its own group: signal the group (workers included)
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)  # a process that exits sends us nothing: poll, bounded by the deadline
    return True


def _tail(stack: Stack, lines: int = 20) -> str:
    try:
        return "\n".join(stack.log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _value(key: Any) -> str | None:
    if isinstance(key, dict):
        key = key.get("value")
    return key if isinstance(key, str) and key else None


@contextlib.contextmanager
def _locked(stack: Stack) -> Iterator[None]:
    stack.state.mkdir(parents=True, exist_ok=True)
    with open(stack.state / "lifecycle.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
