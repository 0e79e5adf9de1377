"""What the host reads before it loads the app: host.json, local.settings.json and binding expressions.

- `load_local_settings(folder, environ)` puts local.settings.json's "Values" (or, when it is missing, those of
  local.settings.json.example) into `environ` without overriding a variable already set, as `func start`
  does; the functions then read their settings from the process environment, as in Azure.
- `HostOptions.read(folder)`: the parts of host.json the local host honours (routePrefix, the queue trigger's
  options, functionTimeout), with the Functions host's defaults (Flex Consumption's) where host.json is silent.
- `resolve(value, settings)`: `%NAME%` binding expressions -> the setting's value (a missing one is an error
  at start-up, as in the host).
- `connection_string(name, settings)`: a binding's `connection` names a setting (`AzureWebJobs<name>` first);
  an empty name means AzureWebJobsStorage.

Reads files only; never logs a setting's value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

_EXPRESSION = re.compile(r"%([^%]+)%")
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?")


class ConfigError(Exception):
    """The app or host.json cannot run as configured; the message names the setting, never its value."""


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """host.json `extensions.queues`, with the defaults of the Functions host except where noted."""

    batch_size: int = 4  # the host's default is 16; this machine has 2 cores shared with others
    new_batch_threshold: int | None = None  # None: batch_size / 2 (the host's, times its processor count: 1 here)
    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)  # how long a failed message stays invisible before its retry
    max_polling_interval: timedelta = timedelta(seconds=2)  # the host's is 1 minute; 2 s keeps local runs brisk
    message_encoding: str = "base64"  # "base64" | "none"
    lease: timedelta = timedelta(minutes=10)  # not in host.json: the host's lease on a received message (tests shorten it)

    @property
    def threshold(self) -> int:
        return self.new_batch_threshold if self.new_batch_threshold is not None else self.batch_size // 2


MIN_FUNCTION_TIMEOUT = timedelta(seconds=1)
DEFAULT_FUNCTION_TIMEOUT = timedelta(minutes=30)  # Flex Consumption's


@dataclass(frozen=True, slots=True)
class HostOptions:
    route_prefix: str = "api"
    function_timeout: timedelta | None = DEFAULT_FUNCTION_TIMEOUT  # None: unbounded ("-1")
    queues: QueueOptions = QueueOptions()
    front_end_timeout: timedelta = timedelta(seconds=230)  # not in host.json: Azure's HTTP front end gives up then

    @classmethod
    def read(cls, folder: Path) -> HostOptions:
        path = folder / "host.json"
        if not path.exists():
            return cls()
        try:
            doc = json.loads(path.read_text())
        except ValueError as e:
            raise ConfigError(f"{path} is not JSON: {e}") from None
        extensions = doc.get("extensions") or {}
        http, queues = extensions.get("http") or {}, extensions.get("queues") or {}
        defaults = QueueOptions()
        options = QueueOptions(
            batch_size=int(queues.get("batchSize", defaults.batch_size)),
            new_batch_threshold=None if queues.get("newBatchThreshold") is None else int(queues["newBatchThreshold"]),
            max_dequeue_count=int(queues.get("maxDequeueCount", defaults.max_dequeue_count)),
            visibility_timeout=_timespan(queues.get("visibilityTimeout"), defaults.visibility_timeout),
            max_polling_interval=_polling(queues.get("maxPollingInterval"), defaults.max_polling_interval),
            message_encoding=str(queues.get("messageEncoding", defaults.message_encoding)).lower())
        if options.batch_size < 1 or options.max_dequeue_count < 1 or options.message_encoding not in ("base64", "none"):
            raise ConfigError("host.json extensions.queues: batchSize and maxDequeueCount must be >= 1, "
                              "messageEncoding base64 or none")
        timeout = doc.get("functionTimeout")
        function_timeout = DEFAULT_FUNCTION_TIMEOUT if timeout is None else \
            None if str(timeout) == "-1" else _timespan(timeout, None)
        if function_timeout is not None and function_timeout < MIN_FUNCTION_TIMEOUT:
            # The host's words; on Flex Consumption there is no upper bound, so its maximum is TimeSpan.MaxValue.
            raise ConfigError("FunctionTimeout must be greater than 00:00:01 and less than "
                              "10675199.02:48:05.4775807.")
        return cls(route_prefix=str(http.get("routePrefix", "api")).strip("/"), function_timeout=function_timeout,
                   queues=options)


def load_local_settings(folder: Path, environ: MutableMapping[str, str]) -> Path | None:
    """local.settings.json (or its .example) "Values" -> environ, never overriding what is set. Returns the file."""
    for name in ("local.settings.json", "local.settings.json.example"):
        path = folder / name
        if path.exists():
            break
    else:
        return None
    try:
        values = json.loads(path.read_text()).get("Values") or {}
    except (ValueError, AttributeError):
        raise ConfigError(f"{path} is not a JSON object with \"Values\"") from None
    for key, value in values.items():
        environ.setdefault(str(key), "" if value is None else str(value))
    return path


def resolve(value: str, settings: Mapping[str, str], *, what: str) -> str:
    """`%NAME%` -> settings[NAME], as the host resolves binding expressions; ConfigError names a missing one."""

    def setting(match: re.Match[str]) -> str:
        name = match[1]
        if name not in settings:
            raise ConfigError(f"{what}: the binding expression %{name}% names no app setting")
        return settings[name]

    return _EXPRESSION.sub(setting, value)


def connection_string(name: str | None, settings: Mapping[str, str], *, what: str) -> str:
    """A binding's `connection` -> its connection string, looked up in the host's order.

    `AzureWebJobs<name>` first, then `<name>`, each as a connection string (`ConnectionStrings:<key>`, or
    `ConnectionStrings__<key>` in the environment) before an app setting; an empty value counts as missing.
    No name means `Storage`, so `AzureWebJobsStorage`.
    """
    name = name or "Storage"
    for key in (f"AzureWebJobs{name}", name):
        for candidate in (f"ConnectionStrings:{key}", f"ConnectionStrings__{key}", key):
            value = settings.get(candidate)
            if value:
                return value
    raise ConfigError(f"{what}: Storage account connection string 'AzureWebJobs{name}' does not exist. "
                      "Make sure that it is a defined App Setting.")


def timespan_text(span: timedelta) -> str:
    """A timedelta as .NET writes a TimeSpan: [d.]hh:mm:ss[.fffffff]."""
    whole = int(span.total_seconds())
    days, rest = divmod(whole, 86400)
    text = f"{rest // 3600:02}:{rest % 3600 // 60:02}:{rest % 60:02}"
    if span.microseconds:
        text += f".{span.microseconds * 10:07}"
    return f"{days}.{text}" if days else text


def _timespan(value: object, default: timedelta | None) -> timedelta | None:
    if value is None:
        return default
    match = _TIMESPAN.fullmatch(str(value))
    if match is None:
        raise ConfigError(f"host.json: {value!r} is not a TimeSpan (hh:mm:ss)")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups()[:4])
    fraction = float(f"0.{match[5]}") if match[5] else 0.0
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds + fraction)


def _polling(value: object, default: timedelta) -> timedelta:
    # The host takes a TimeSpan or a number of milliseconds.
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return timedelta(milliseconds=float(value))
    return _timespan(value, default) or default
