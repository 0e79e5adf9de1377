"""The local stack's lifecycle: `shipbot up` and `shipbot down`.

`up` is idempotent and returns at once when everything answers. It runs `scripts/local-stack.sh up` (Debian
packages, the Docker engine, the registry with its push notifications pointed at the host's event bridge,
Azurite, the base image: each step returns at once when its part answers), starts any environment container
that exists but was stopped (so `down` then `up` brings the environments back as they were), then starts the
local functions host `python -m stack.host --port PORT` as a detached process (its own session, stdout and
stderr to `$SHIPBOT_STATE/log/host.log`, its pid in `$SHIPBOT_STATE/host.pid`) unless one runs already, and
waits, with a deadline, until `GET /admin/host/status` answers 200 to the master key of
`$SHIPBOT_STATE/host-keys.json`.

An `up` that fails halfway (a daemon or the host does not come up, the deadline passes, Ctrl-C) leaves the
stack as it found it: it stops the host and the daemons this call started (those whose pid file names a
live process now and did not before), stops the environment containers it started and removes the app
repository it created; what was running before is left running.

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
import shutil
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
        undo = _Undo(stack, daemons=_live_daemons(stack))
        try:
            return _up(stack, undo, t0, deadline, timeout_s, note, progress, script_output)
        except BaseException:
            for undone in undo(note=note, output=script_output):
                note(undone)
            raise


def _up(stack: Stack, undo: _Undo, t0: float, deadline: float, timeout_s: float, note: Callable[[str], None],
        progress: Callable[[str], None], script_output: TextIO | None) -> Up:
    note("the stack's daemons: scripts/local-stack.sh up")
    try:
        _script(stack, "up", output=script_output)
    finally:
        undo.daemons_after = _live_daemons(stack)
    for name, started_again in start_environments(stack.environments, named=True):
        undo.environments.append(name)
        note(started_again)
    undo.app_repo = _app_repository(stack)
    if host_answers(stack):
        return Up(host_pid(stack), False, time.monotonic() - t0)
    pid, started = host_pid(stack), False
    if pid is None:
        note(f"starting the host on {stack.url}, log in {stack.log_file}")
        pid, started = _spawn_host(stack), True
        undo.host = True
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


DAEMONS = (("azurite", "azurite.pid"), ("mariadb", "mariadb.pid"), ("registry", "registry.pid"),
           ("docker", "dockerd.pid"))  # in the order they stop


def _live_daemons(stack: Stack) -> dict[str, int]:
    """The script's daemons that run now: part -> pid, from the pid files it writes."""
    live = {}
    for part, file in DAEMONS:
        try:
            pid = int((stack.state / file).read_text().strip())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            live[part] = pid
    return live


@dataclass
class _Undo:
    """What one `up` started, to be stopped again when it fails."""

    stack: Stack
    daemons: dict[str, int]                       # running before the script ran
    daemons_after: dict[str, int] = field(default_factory=dict)
    environments: list[str] = field(default_factory=list)
    app_repo: bool = False
    host: bool = False

    def __call__(self, *, note: Callable[[str], None], output: TextIO | None) -> list[str]:
        """Undoes each step on its own: one that fails is reported and the others still run, and the error
        that failed the start stays the one raised."""
        done: list[str] = []
        after = self.daemons_after or _live_daemons(self.stack)
        started = [part for part, _ in DAEMONS if part in after and part not in self.daemons]
        steps = [("the host", self.host, lambda: done.append("stopped the host this start began")
                  if stop_host(self.stack, note=note) else None),
                 ("the environments", self.environments, lambda: done.extend(_each_container(
                     tuple(self.environments), lambda c: (c.stop(), f"stopped {c.name} again")[1]))),
                 (str(self.stack.app_repo), self.app_repo, lambda: (
                     shutil.rmtree(self.stack.app_repo, ignore_errors=True),
                     done.append(f"removed {self.stack.app_repo}, created by this start"))),
                 (", ".join(started), started, lambda: (
                     _script(self.stack, "stop", *started, output=output),
                     done.append(f"stopped {', '.join(started)}, started by this start")))]
        for what, wanted, undo in steps:
            if not wanted:
                continue
            try:
                undo()
            except Exception as e:  # noqa: BLE001 - reported; the start's own error is the one raised
                done.append(f"could not undo {what}: {e}")
        return done


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


def start_environments(names: tuple[str, ...] = ENVIRONMENT_CONTAINERS, *, named: bool = False) -> list[Any]:
    """Starts environment containers that exist but were stopped (by `down`, or an engine restart).

    The notes, or with `named` (name, note) pairs.
    """
    def start(container: Any) -> Any:
        if container.status not in ("created", "exited"):
            return None
        container.start()
        note = f"started {container.name} again"
        return (container.name, note) if named else note

    return _each_container(names, start)


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


def _script(stack: Stack, verb: str, *parts: str, output: TextIO | None) -> None:
    out = output if output is not None else sys.stderr
    result = subprocess.run(["bash", str(stack.root / "scripts" / "local-stack.sh"), verb, *parts],
                            env=stack.child_environ(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                            check=False)
    if result.returncode != 0:
        raise StackError(f"scripts/local-stack.sh {verb} failed (exit {result.returncode}); its logs are in "
                         f"{stack.state / 'log'}")


def _app_repository(stack: Stack) -> bool:
    """An empty bare repository for the app when there is none, so that the host has a source to read.

    Whether it made one.
    """
    if (stack.app_repo / "HEAD").exists():
        return False
    fresh = not stack.app_repo.exists()
    stack.app_repo.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(stack.app_repo)],
                   check=True, stdin=subprocess.DEVNULL)
    return fresh


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
