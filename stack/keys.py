"""The host's keys, kept like the Functions host keeps them, in one file: `$SHIPBOT_STATE/host-keys.json`.

    {"master": ..., "functionKeys": {"default": ...}, "systemKeys": {"eventgrid_extension": ...}}

Created with `secrets.token_urlsafe(32)` values and mode 0600 when missing (and never rewritten after). The
environment overrides two of them: SHIPBOT_API_KEY (the default function key) and SHIPBOT_EVENTGRID_KEY (the
Event Grid extension's system key). Comparison is constant-time. Keys never reach a log line or a message:
`secrets()` lists them for the log redaction filter.

Who passes where, as in the host:
    ANONYMOUS  everyone
    FUNCTION   any function key, or the master key
    ADMIN      the master key only (also /admin/...)
    system     the extension's system key, or the master key (/runtime/webhooks/eventgrid)
"""

from __future__ import annotations

import hmac
import json
import os
import secrets as _secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

FILE_NAME = "host-keys.json"
EVENTGRID = "eventgrid_extension"


@dataclass(frozen=True)
class HostKeys:
    master: str
    function_keys: Mapping[str, str] = field(default_factory=dict)
    system_keys: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path, *, environ: Mapping[str, str] | None = None) -> HostKeys:
        """Read (or first create) `state_dir/host-keys.json`, then apply the environment's overrides."""
        environ = {} if environ is None else environ
        path = state_dir / FILE_NAME
        if not path.exists():
            _create(path)
        doc = json.loads(path.read_text())
        function_keys = dict(doc.get("functionKeys") or {})
        system_keys = dict(doc.get("systemKeys") or {})
        if environ.get("SHIPBOT_API_KEY"):
            function_keys["default"] = environ["SHIPBOT_API_KEY"]
        if environ.get("SHIPBOT_EVENTGRID_KEY"):
            system_keys[EVENTGRID] = environ["SHIPBOT_EVENTGRID_KEY"]
        if not doc.get("master"):
            raise ValueError(f"{path} has no master key")
        return cls(master=doc["master"], function_keys=function_keys, system_keys=system_keys)

    def allows(self, level: str, presented: str | None) -> bool:
        """Whether `presented` (from x-functions-key or ?code=) passes `level`: anonymous|function|admin|system."""
        level = level.lower()
        if level == "anonymous":
            return True
        if not presented:
            return False
        if _same(presented, self.master):
            return True
        if level == "function":
            return any(_same(presented, key) for key in self.function_keys.values())
        if level == "system":
            return any(_same(presented, key) for key in self.system_keys.values())
        return False

    @property
    def eventgrid(self) -> str:
        return self.system_keys.get(EVENTGRID) or self.master

    @property
    def default_function_key(self) -> str:
        return self.function_keys.get("default") or self.master

    def secrets(self) -> list[str]:
        return [self.master, *self.function_keys.values(), *self.system_keys.values()]


def shared_secret(path: Path, *, override: str | None = None) -> str:
    """A secret shared through a file (mode 0600, created with a random value when missing), or `override`."""
    if override:
        return override
    if not path.exists():
        write_new(path, _secrets.token_urlsafe(32) + "\n")
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value


def write_new(path: Path, text: str) -> bool:
    """Write `text` to `path` (mode 0600) unless it exists; False when another writer was first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    try:  # link() is atomic and refuses an existing name: two processes starting at once agree on one file
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _create(path: Path) -> None:
    doc = {"master": _secrets.token_urlsafe(32), "functionKeys": {"default": _secrets.token_urlsafe(32)},
           "systemKeys": {EVENTGRID: _secrets.token_urlsafe(32)}}
    write_new(path, json.dumps(doc, indent=2) + "\n")


def _same(a: str, b: str) -> bool:
    return bool(b) and hmac.compare_digest(a.encode(), b.encode())
