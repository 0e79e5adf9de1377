"""The app's functions as the host sees them, and one invocation of one of them.

`index(app)` reads a FunctionApp's bindings once (`app.get_functions()`, the function.json documents the
Python worker would send the host) and refuses, at start-up, what the local host cannot serve: binding types
other than httpTrigger/http, eventGridTrigger, timerTrigger, queueTrigger and queue, and Python parameters
that no binding fills (the worker refuses those too).

`Invoker.invoke(function, trigger_value)` runs the user function on the calling thread the way the worker
does: the trigger's value under its binding name (converted to what the parameter's annotation asks for:
`str`/`bytes`/`func.QueueMessage` for a queue message, `func.CloudEvent`/`func.EventGridEvent` for an
event), a fresh `Out` for every output binding, `context` when the function asks for it, coroutines run to
completion. Only after the function returned are its queue outputs sent (a failed invocation sends nothing,
as in the host). Every invocation writes one JSON log line; the function's exception propagates to the
caller, which decides what failure means for its trigger (HTTP 500, Event Grid retry, queue retry/poison).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions import _abc as azf_abc

from stack import logs

T = TypeVar("T")

TRIGGERS = {"httpTrigger": "http", "eventGridTrigger": "eventgrid", "timerTrigger": "timer",
            "queueTrigger": "queue"}
OUTPUTS = frozenset({"http", "queue"})

# Sends messages (bytes, encoded by the sender) to the queue named by a queue output binding.
QueueSender = Callable[[Mapping[str, Any], list[bytes]], None]


class UnsupportedApp(Exception):
    """The app declares something the local host cannot serve; the message names the function."""


@dataclass(frozen=True)
class Function:
    """One function: its name, the user's callable, its trigger binding and its output bindings."""

    name: str
    user_function: Callable[..., Any]
    trigger: Mapping[str, Any]
    outputs: tuple[Mapping[str, Any], ...]
    annotations: Mapping[str, Any]
    wants_context: bool

    @property
    def kind(self) -> str:
        """http | eventgrid | timer | queue."""
        return TRIGGERS[self.trigger["type"]]

    @property
    def trigger_name(self) -> str:
        return self.trigger["name"]

    @property
    def auth_level(self) -> str:
        return str(self.trigger.get("authLevel") or "function").lower()

    def output(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return next((b for b in self.outputs if b["type"] == kind and b["name"] == name), None)


def index(app: func.FunctionApp) -> dict[str, Function]:
    """name -> Function for every function of `app`. Call once per app: get_functions() builds them anew."""
    functions: dict[str, Function] = {}
    for built in app.get_functions():
        name = built.get_function_name()
        user_function = built.get_user_function()
        bindings = [json.loads(raw) for raw in built.get_raw_bindings()]
        triggers = [b for b in bindings if b["type"] in TRIGGERS]
        outputs = tuple(b for b in bindings if b["type"] in OUTPUTS and b.get("direction", "").upper() == "OUT")
        unknown = [b["type"] for b in bindings if b not in triggers and b not in outputs]
        if unknown:
            raise UnsupportedApp(f"function {name!r}: the local host does not serve binding types {unknown}")
        if len(triggers) != 1:
            raise UnsupportedApp(f"function {name!r} has {len(triggers)} triggers; a function has exactly one")
        if name in functions:
            raise UnsupportedApp(f"two functions are named {name!r}")
        parameters = inspect.signature(user_function).parameters
        bound = {b["name"] for b in bindings}
        wants_context = "context" in parameters and "context" not in bound
        loose = [p for p in parameters if p not in bound and p != "context"
                 and parameters[p].default is inspect.Parameter.empty]
        if loose:
            raise UnsupportedApp(f"function {name!r}: parameters {loose} are bound to nothing")
        functions[name] = Function(name=name, user_function=user_function, trigger=triggers[0], outputs=outputs,
                                   annotations=_annotations(user_function), wants_context=wants_context)
    return functions


class Out(func.Out[T], Generic[T]):
    """An output binding's value holder, as the worker passes it."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T | None:  # type: ignore[override]
        return self._value


@dataclass(frozen=True)
class Result:
    """What an invocation produced that its trigger needs: the HTTP response value, for HTTP triggers."""

    invocation_id: str
    http_response: Any = None


class Invoker:
    """Runs invocations on the calling thread; the host calls it from its worker pool."""

    def __init__(self, *, send_queue: QueueSender, function_directory: str = ".") -> None:
        self._send_queue = send_queue
        self._directory = function_directory

    def invoke(self, function: Function, trigger_value: Any, *, retry_count: int = 0) -> Result:
        """One invocation. Raises what the user function raised (after logging it)."""
        invocation = str(uuid.uuid4())
        token = logs.invocation_id.set(invocation)
        started = time.perf_counter()
        try:
            kwargs, outs = self._arguments(function, trigger_value, invocation, retry_count)
            returned = function.user_function(**kwargs)
            if inspect.isawaitable(returned):
                returned = asyncio.run(_awaited(returned))
            http_response = self._outputs(function, outs, returned)
        except BaseException as e:
            logs.invocation(function=function.name, trigger=function.kind, invocation=invocation,
                            duration_ms=(time.perf_counter() - started) * 1000, outcome="failed", error=e)
            raise
        finally:
            logs.invocation_id.reset(token)
        logs.invocation(function=function.name, trigger=function.kind, invocation=invocation,
                        duration_ms=(time.perf_counter() - started) * 1000, outcome="succeeded")
        return Result(invocation, http_response)

    def _arguments(self, function: Function, trigger_value: Any, invocation: str,
                   retry_count: int) -> tuple[dict[str, Any], dict[str, Out[Any]]]:
        name = function.trigger_name
        kwargs: dict[str, Any] = {name: convert(trigger_value, function.annotations.get(name))}
        outs: dict[str, Out[Any]] = {b["name"]: Out() for b in function.outputs if b["name"] != "$return"}
        kwargs.update(outs)
        if function.wants_context:
            kwargs["context"] = Context(invocation, function.name, self._directory, retry_count)
        return kwargs, outs

    def _outputs(self, function: Function, outs: Mapping[str, Out[Any]], returned: Any) -> Any:
        http_response = None
        for binding in function.outputs:
            value = returned if binding["name"] == "$return" else outs[binding["name"]].get()
            if binding["type"] == "http":
                http_response = value if value is not None else http_response
            elif binding["type"] == "queue":
                messages = queue_messages(value)
                if messages:
                    self._send_queue(binding, messages)
        return http_response


def convert(value: Any, annotation: Any) -> Any:
    """The trigger's value as the parameter's annotation asks for it (the worker's converters do the same)."""
    if isinstance(value, func.QueueMessage):
        if annotation is str or annotation == "str":
            return value.get_body().decode("utf-8")
        if annotation is bytes or annotation == "bytes":
            return value.get_body()
    return value


def queue_messages(value: Any) -> list[bytes]:
    """An output value -> message bodies: str, bytes, QueueMessage, a JSON object, or a list of those."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value.encode("utf-8")]
    if isinstance(value, bytes | bytearray):
        return [bytes(value)]
    if isinstance(value, func.QueueMessage):
        return [value.get_body()]
    if isinstance(value, Mapping):
        return [json.dumps(value).encode("utf-8")]
    if isinstance(value, Iterable):
        return [body for item in value for body in queue_messages(item)]
    raise TypeError(f"a queue output cannot hold a {type(value).__name__}")


def wants(function: Function, kind: type) -> bool:
    """Whether the trigger parameter is annotated with `kind` (or a string naming it)."""
    annotation = function.annotations.get(function.trigger_name)
    if isinstance(annotation, str):
        return annotation.rpartition(".")[2] == kind.__name__
    return isinstance(annotation, type) and issubclass(annotation, kind)


def _annotations(user_function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(user_function)
    except Exception:  # noqa: BLE001 - an unresolvable string annotation: fall back to the raw ones
        return {name: p.annotation for name, p in inspect.signature(user_function).parameters.items()
                if p.annotation is not inspect.Parameter.empty}


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class _TraceContext(azf_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(azf_abc.RetryContext):
    def __init__(self, retry_count: int) -> None:
        self._count = retry_count

    @property
    def retry_count(self) -> int:
        return self._count

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class Context(func.Context):
    """`context` for functions that ask for it: invocation id, function name and directory."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str, retry_count: int) -> None:
        self._id, self._name, self._directory = invocation_id, function_name, function_directory
        self._trace, self._retry = _TraceContext(), _RetryContext(retry_count)
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._id

    @property
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]
        return self._local

    @property
    def function_name(self) -> str:
        return self._name

    @property
    def function_directory(self) -> str:
        return self._directory

    @property
    def trace_context(self) -> azf_abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> azf_abc.RetryContext:
        return self._retry
