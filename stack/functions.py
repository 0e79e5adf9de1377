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
import collections.abc
import contextvars
import inspect
import json
import logging
import threading
import time
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions import _abc as azf_abc

from stack import config, logs

T = TypeVar("T")
log = logging.getLogger("stack.functions")

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
    has_return: bool = False
    encoders: Mapping[str, tuple[str, Any]] = field(default_factory=dict)  # out binding -> (converter, pytype)

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
    """name -> Function for every function of `app`. Call once per app: get_functions() builds them anew.

    One function the worker would refuse fails the whole index (in Azure the worker's metadata response fails
    and the host runs no function at all): raises FunctionLoadError with the worker's message.
    """
    functions: dict[str, Function] = {}
    for built in app.get_functions():
        name = built.get_function_name()
        user_function = built.get_user_function()
        raw = [json.loads(binding) for binding in built.get_raw_bindings()]
        triggers = [b for b in raw if b["type"] in TRIGGERS]
        outputs = tuple(b for b in raw if b["type"] in OUTPUTS and b.get("direction", "").upper() == "OUT")
        unknown = [b["type"] for b in raw if b not in triggers and b not in outputs]
        if unknown:
            raise UnsupportedApp(f"function {name!r}: the local host does not serve binding types {unknown}")
        if len(triggers) != 1:
            raise UnsupportedApp(f"function {name!r} has {len(triggers)} triggers; a function has exactly one")
        if name in functions:
            raise UnsupportedApp(f"two functions are named {name!r}")
        try:
            annotations, wants_context, returns, encoders = _worker_checks(name, user_function,
                                                                           built.get_bindings())
        except FunctionLoadError:
            raise
        except Exception as e:  # noqa: BLE001 - what the worker's own checks raise fails its index the same way
            raise FunctionLoadError(name, f"{type(e).__name__}: {e}") from e
        functions[name] = Function(name=name, user_function=user_function, trigger=triggers[0], outputs=outputs,
                                   annotations=annotations, wants_context=wants_context, has_return=returns,
                                   encoders=encoders)
    return functions


class FunctionTimeout(Exception):
    """The invocation ran past host.json functionTimeout (the host's FunctionTimeoutException)."""


class FunctionLoadError(UnsupportedApp):
    """The Python worker refuses the function (its FunctionLoadError, same message)."""

    def __init__(self, function_name: str, message: str) -> None:
        super().__init__(f"cannot load the {function_name} function: {message}")


_IN, _OUT, _INOUT = 0, 1, 2  # BindingInfo.Direction in the worker's protocol (the SDK's Binding.direction)
_UNDEFINED = 0               # BindingInfo.DataType.undefined


def _worker_checks(name: str, user_function: Callable[..., Any],
                   bindings: Iterable[Any]) -> tuple[dict[str, Any], bool, bool, dict[str, tuple[str, Any]]]:
    """The worker's rules for one function (azure_functions_worker/functions.py, Registry.add_indexed_function).

    Returns (annotations, wants_context, has_return, encoders). Every parameter is a binding and every binding but
    `$return` a parameter; an `Out[...]` parameter is an out binding and the other way round; each annotation
    passes the SDK converter's check for its binding type (str/bytes ones the generic binding's); the return
    annotation, when there is a `$return`, passes the output check of that binding.
    """
    annotations = typing.get_type_hints(user_function)  # an unresolvable annotation fails the worker too
    params = dict(inspect.signature(user_function).parameters)
    bound: dict[str, Any] = {}
    return_type: str | None = None
    for binding in bindings:
        if binding.direction == _INOUT:
            raise FunctionLoadError(name, '"inout" bindings are not supported')
        if binding.name == "$return":
            if binding.direction != _OUT:
                raise FunctionLoadError(name, '"$return" binding must have direction set to "out"')
            return_type = return_type or binding.type
        else:
            bound[binding.name] = binding
    wants_context = "context" in params and "context" not in bound
    if wants_context:
        params.pop("context")
        anno = annotations.get("context")
        if "context" in annotations and (not isinstance(anno, type) or anno.__name__ != "Context"):
            raise FunctionLoadError(name, 'the "context" parameter is expected to be of type '
                                          f"azure.functions.Context, got {anno!r}")
    if set(params) - set(bound):
        raise FunctionLoadError(name, "the following parameters are declared in Python but not in "
                                      f"function.json: {set(params) - set(bound)!r}")
    if set(bound) - set(params):
        raise FunctionLoadError(name, "the following parameters are declared in function.json but not in "
                                      f"Python: {set(bound) - set(params)!r}")
    encoders: dict[str, tuple[str, Any]] = {}
    for param in params:
        kind, pytype = bound[param].type, None  # an unannotated parameter: its binding's own converter
        if param in annotations:
            kind, pytype = _check_parameter(name, param, annotations[param], bound[param])
        if bound[param].direction == _OUT:
            encoders[param] = (kind, pytype)
    if return_type is not None and "return" in annotations:
        anno = annotations["return"]
        if _is_generic(anno) and getattr(_origin(anno), "__name__", None) == "Out":
            raise FunctionLoadError(name, "return annotation should not be azure.functions.Out")
        if not isinstance(anno, type):
            raise FunctionLoadError(name, f"has invalid non-type return annotation {anno!r}")
        if not _checks_output(return_type, anno):
            raise FunctionLoadError(name, f'Python return annotation "{anno.__name__}" does not match '
                                          f'binding type "{return_type}"')
        encoders["$return"] = (return_type, anno)
    elif return_type is not None:
        encoders["$return"] = (return_type, None)
    return annotations, wants_context, return_type is not None, encoders


def _check_parameter(name: str, param: str, anno: Any, binding: Any) -> tuple[str, Any]:
    """Raises FunctionLoadError unless `anno` suits `binding`; returns (converter kind, Python type)."""
    origin = _origin(anno) if _is_generic(anno) else None
    is_out = (isinstance(origin, type) and origin.__name__ == "Out") if origin is not None else \
        (isinstance(anno, type) and anno.__name__ == "Out")
    pytype = anno
    if is_out:
        args = getattr(anno, "__args__", ()) if isinstance(anno, typing._GenericAlias) else ()  # type: ignore[attr-defined]
        if len(args) != 1:
            raise FunctionLoadError(name, f"binding {param} has invalid Out annotation {anno!r}")
        pytype = args[0]
    if not isinstance(pytype, type) and not _is_generic(pytype):
        raise FunctionLoadError(name, f"binding {param} has invalid non-type annotation {anno!r}")
    binding_out = binding.direction == _OUT
    if binding_out and not is_out:
        raise FunctionLoadError(name, f'binding {param} is declared to have the "out" direction, but its '
                                      "annotation in Python is not a subclass of azure.functions.Out")
    if not binding_out and is_out:
        raise FunctionLoadError(name, f'binding {param} is declared to have the "in" direction in '
                                      "function.json, but its annotation is azure.functions.Out in Python")
    kind = "generic" if pytype in (str, bytes) else binding.type
    ok = _checks_output(kind, pytype) if is_out else _checks_input(kind, pytype)
    if not ok:
        type_name = getattr(pytype, "__name__", repr(pytype))
        if binding.data_type is not _UNDEFINED:
            raise FunctionLoadError(name, f'{param!r} binding type "{binding.type}" and dataType '
                                          f'"{binding.data_type}" in function.json do not match the '
                                          f"corresponding function parameter's Python type annotation "
                                          f'"{type_name}"')
        raise FunctionLoadError(name, f'type of {param} binding in function.json "{binding.type}" does not '
                                      f'match its Python annotation "{type_name}"')
    return kind, pytype


def _converter(kind: str) -> Any:
    """The SDK's converter for a binding type (what the worker looks up), None for the generic binding."""
    return None if kind == "generic" else func.get_binding_registry().get(kind)


def _checks_input(kind: str, pytype: Any) -> bool:
    converter = _converter(kind)
    return issubclass(pytype, (str, bytes)) if converter is None else converter.check_input_type_annotation(pytype)


def _checks_output(kind: str, pytype: Any) -> bool:
    converter = _converter(kind)
    if converter is None:
        return issubclass(pytype, (str, bytes, bytearray))
    return converter.check_output_type_annotation(pytype)


def _is_generic(tp: Any) -> bool:
    """typing_inspect.is_generic_type as the worker vendors it: typing's generics, not list[str] & co."""
    if isinstance(tp, type) and issubclass(tp, typing.Generic):  # type: ignore[arg-type]
        return True
    aliases = (typing._GenericAlias, typing._SpecialGenericAlias)  # type: ignore[attr-defined]
    return isinstance(tp, aliases) and tp.__origin__ not in (typing.Union, tuple, typing.ClassVar,
                                                              collections.abc.Callable)


def _origin(tp: Any) -> Any:
    if isinstance(tp, typing._GenericAlias):  # type: ignore[attr-defined]
        return tp.__origin__ if tp.__origin__ is not typing.ClassVar else None
    return typing.Generic if tp is typing.Generic else None


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

    def __init__(self, *, send_queue: QueueSender, function_directory: str = ".",
                 timeout: timedelta | None = None) -> None:
        self._send_queue = send_queue
        self._directory = function_directory
        self._timeout = timeout

    def invoke(self, function: Function, trigger_value: Any, *, retry_count: int = 0) -> Result:
        """One invocation. Raises what the user function raised (after logging it)."""
        invocation = str(uuid.uuid4())
        token = logs.invocation_id.set(invocation)
        started = time.perf_counter()
        try:
            kwargs, outs = self._arguments(function, trigger_value, invocation, retry_count)
            returned = self._call(function, kwargs, invocation)
            if returned is not None and not function.has_return:  # the worker's words, missing space and all
                raise RuntimeError(f"function {function.name!r} without a $return binding"
                                   "returned a non-None value")
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

    def _call(self, function: Function, kwargs: dict[str, Any], invocation: str) -> Any:
        """The user function's return value; with a functionTimeout, on a thread of its own, given up on time.

        A function past its timeout fails its invocation (the queue retries it, HTTP answers 500) and what it
        sets afterwards is never sent. The host then restarts the worker process, which ends the function;
        Python cannot stop a thread, so here it runs on to its end, unobserved.
        """
        def call() -> Any:
            returned = function.user_function(**kwargs)
            return asyncio.run(_awaited(returned)) if inspect.isawaitable(returned) else returned

        if self._timeout is None:
            return call()
        outcome: Future[Any] = Future()

        def run() -> None:
            try:
                outcome.set_result(call())
            except BaseException as e:  # noqa: BLE001 - handed to the invocation's thread
                outcome.set_exception(e)

        context = contextvars.copy_context()  # the invocation id travels with it into the function's logs
        threading.Thread(target=context.run, args=(run,), name=f"function-{function.name}", daemon=True).start()
        done, _ = futures_wait([outcome], timeout=self._timeout.total_seconds())
        if done:
            return outcome.result()  # what it returned, or what it raised (a TimeoutError of its own included)
        log.error("Timeout value of %s exceeded by function 'Functions.%s' (Id: '%s'). Initiating cancellation.",
                  config.timespan_text(self._timeout), function.name, invocation)
        raise FunctionTimeout(f"Timeout value of {config.timespan_text(self._timeout)} was exceeded by function: "
                              f"Functions.{function.name}")

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
        sends = []
        for binding in function.outputs:
            value = returned if binding["name"] == "$return" else outs[binding["name"]].get()
            if binding["type"] == "http":
                http_response = value if value is not None else http_response
            elif binding["type"] == "queue" and value is not None:
                kind, pytype = function.encoders.get(binding["name"], ("queue", None))
                sends.append((binding, queue_messages(encode(kind, value, pytype))))
        for binding, messages in sends:  # every output encodes before any is sent, as the worker returns them
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


def encode(kind: str, value: Any, pytype: Any) -> tuple[str, Any]:
    """An output value -> (datum type, value) by the converter the worker picked for the binding at index."""
    converter = _converter(kind)
    try:
        if converter is None:
            return _generic_encode(value)
        datum = converter.encode(value, expected_type=pytype)
    except NotImplementedError:
        raise TypeError(f'unable to encode outgoing TypedData: unsupported type "{converter or "generic"}" '
                        f'for Python type "{type(value).__name__}"') from None
    return datum.type, datum.value


def _generic_encode(value: Any) -> tuple[str, Any]:
    """The worker's GenericBinding.encode, then the host's view of the datum."""
    if isinstance(value, str):
        return "string", value
    if isinstance(value, bytes | bytearray):
        return "bytes", bytes(value)
    if isinstance(value, dict | list):
        return "json", json.dumps(value)
    if isinstance(value, bool | int | float):
        return "string", str(value)
    raise NotImplementedError


def queue_messages(datum: tuple[str, Any]) -> list[bytes]:
    """What the host's queue output makes of a datum: a JSON array is one message per item, else one."""
    kind, value = datum
    if kind == "bytes":
        return [bytes(value)]
    if kind == "json":
        parsed = json.loads(value)
        items = parsed if isinstance(parsed, list) else [parsed]
        return [(item if isinstance(item, str) else json.dumps(item)).encode("utf-8") for item in items]
    return [str(value).encode("utf-8")]


def wants(function: Function, kind: type) -> bool:
    """Whether the trigger parameter is annotated with `kind` (or a string naming it)."""
    annotation = function.annotations.get(function.trigger_name)
    if isinstance(annotation, str):
        return annotation.rpartition(".")[2] == kind.__name__
    return isinstance(annotation, type) and issubclass(annotation, kind)


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
