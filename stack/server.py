"""The local host's HTTP surface: a small ASGI app that serves what the Functions host serves.

    /<routePrefix>/<route>                HTTP triggers: route templates, methods, key auth (x-functions-key
                                          or ?code=), real func.HttpRequest in, func.HttpResponse out
    /runtime/webhooks/eventgrid           Event Grid triggers (system key): validation, notifications
    /admin/host/status                    GET, master key: {"state": "Running", ...}
    /admin/functions/<name>               POST {"input": ...}, master key: run a non-HTTP function now (202)
    /runtime/bridge/registry              POST, the registry's shared secret: notifications -> ImagePushed
    /                                     GET: 200, the host is up

As in the host: a route that does not exist is 404 before any key is checked; a missing or wrong key is 401
(empty body) and the function never runs; a function that raises is 500 (empty body); bodies past
`max_body` (100 MB, the host's limit) are 413. Functions run on the host's worker pool, never on the loop.

Request lines are logged with their path only: query strings carry `code=`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import azure.functions as func
from azure.functions import queue as azf_queue
from azure.functions import timer as azf_timer

from stack import eventgrid
from stack.functions import wants

if TYPE_CHECKING:
    from stack.host import Host

log = logging.getLogger("stack.http")
MAX_BODY = 100 * 1024 * 1024
MAX_REGISTRY_BODY = 4 * 1024 * 1024
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class TooLarge(Exception):
    pass


class Request:
    def __init__(self, scope: dict[str, Any], receive: Receive) -> None:
        self.method: str = scope["method"].upper()
        self.path: str = scope["path"]
        raw = scope.get("raw_path") or scope["path"].encode()
        self.raw_path: str = raw.decode("latin-1").split("?", 1)[0]
        self.query_string: str = scope.get("query_string", b"").decode("latin-1")
        self.query = dict(parse_qsl(self.query_string, keep_blank_values=True))
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers = headers
        host = headers.get("host") or "{}:{}".format(*(scope.get("server") or ("127.0.0.1", 80)))
        self.url = f"{scope.get('scheme', 'http')}://{host}{self.raw_path}" + (
            f"?{self.query_string}" if self.query_string else "")
        self._receive = receive

    @property
    def key(self) -> str | None:
        """The key presented: the x-functions-key header first, then ?code=."""
        return self.headers.get("x-functions-key") or self.query.get("code") or None

    async def body(self, limit: int) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge()
        chunks, size = [], 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise TooLarge()
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)


class Response:
    def __init__(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or []

    @classmethod
    def json(cls, status: int, document: Any) -> Response:
        return cls(status, json.dumps(document).encode(), [("content-type", "application/json; charset=utf-8")])

    async def send(self, send: Send) -> None:
        headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in self.headers]
        if not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def http_answer(value: Any) -> Response:
    """What an HTTP function returned -> the HTTP answer (the worker's HttpResponseConverter, then the host)."""
    if value is None:
        return Response(204)
    if isinstance(value, str):
        return Response(200, value.encode("utf-8"), [("content-type", "text/plain; charset=utf-8")])
    if isinstance(value, bytes):
        return Response(200, value, [("content-type", "application/octet-stream")])
    if isinstance(value, func.HttpResponse):
        headers = [(k, v) for k, v in value.headers.items() if k.lower() != "content-length"]
        if not any(k.lower() == "content-type" for k, _ in headers):
            mimetype = value.mimetype
            headers.append(("content-type", f"{mimetype}; charset={value.charset}"
                            if mimetype.startswith("text/") else mimetype))
        return Response(int(value.status_code), value.get_body() or b"", headers)
    raise TypeError(f"an HTTP function returned a {type(value).__name__}, not an HttpResponse")


class Server:
    """The ASGI app of one Host. Lifespan events start and stop the host's background parts."""

    def __init__(self, host: Host, *, max_body: int = MAX_BODY) -> None:
        self.host = host
        self.max_body = max_body

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        started = time.perf_counter()
        try:
            response = await self._dispatch(request)
        except TooLarge:
            response = Response(413)
        except Exception:  # a bug of ours: answer 500, keep serving
            log.exception("unexpected error serving %s %s", request.method, request.path)
            response = Response(500)
        await response.send(send)
        log.info("%s %s %d", request.method, request.path, response.status,
                 extra={"fields": {"method": request.method, "path": request.path, "status": response.status,
                                   "duration_ms": round((time.perf_counter() - started) * 1000, 1)}})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.host.start)
                except Exception as e:  # reported to the server, which exits
                    log.exception("the host did not start")
                    await send({"type": "lifespan.startup.failed", "message": type(e).__name__})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.host.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, request: Request) -> Response:
        path = request.path
        if path == "/" and request.method in ("GET", "HEAD"):
            return Response(200, b"The ShipBot local Functions host is running.\n", [("content-type", "text/plain")])
        if path == "/runtime/webhooks/eventgrid":
            return await self._eventgrid(request)
        if path == "/runtime/bridge/registry":
            return await self._registry(request)
        if path.startswith("/admin/"):
            return await self._admin(request)
        prefix = f"/{self.host.options.route_prefix}" if self.host.options.route_prefix else ""
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return Response(404)
        return await self._http_function(request, request.raw_path[len(prefix):])

    # -- HTTP triggers ---------------------------------------------------------------------------------------
    async def _http_function(self, request: Request, route_path: str) -> Response:
        found = self.host.router.find(request.method, route_path)
        if found is None:
            return Response(404)
        function, route_params = found
        if not self.host.keys.allows(function.auth_level, request.key):
            return Response(401)
        body = await request.body(self.max_body)
        http_request = func.HttpRequest(request.method, request.url, headers=request.headers,
                                        params=request.query, route_params=route_params, body=body)
        invocation = asyncio.ensure_future(self.host.run(function, http_request))
        invocation.add_done_callback(_observed)
        # Azure's front end gives up on a request after 230 s: 502, while the invocation runs on.
        done, _ = await asyncio.wait({invocation}, timeout=self.host.options.front_end_timeout.total_seconds())
        if not done:
            log.warning("HTTP function %s ran past the front end's %s s: answered 502, the invocation goes on",
                        function.name, self.host.options.front_end_timeout.total_seconds())
            return Response(502)
        if invocation.exception() is not None:  # logged by the invoker; the host answers 500
            return Response(500)
        return http_answer(invocation.result().http_response)

    # -- Event Grid ------------------------------------------------------------------------------------------
    async def _eventgrid(self, request: Request) -> Response:
        if not self.host.keys.allows("system", request.key):
            return Response(401)
        function = self.host.functions.get(request.query.get("functionName", ""))
        if function is None or function.kind != "eventgrid":
            return Response(404)
        if request.method == "OPTIONS":  # CloudEvents abuse protection handshake
            origin = request.headers.get("webhook-request-origin")
            if not origin:
                return Response(400)
            return Response(200, headers=[("webhook-allowed-origin", origin), ("webhook-allowed-rate", "*")])
        if request.method != "POST":
            return Response(405)
        kind = request.headers.get("aeg-event-type")
        if not kind:
            return Response(400, b"missing aeg-event-type header", [("content-type", "text/plain")])
        if kind in eventgrid.DELETION:
            return Response(202)
        if kind not in (eventgrid.VALIDATION, eventgrid.NOTIFICATION):
            return Response(400, b"unknown aeg-event-type", [("content-type", "text/plain")])
        try:
            items = eventgrid.parse_events(await request.body(self.max_body))
            if kind == eventgrid.VALIDATION:
                return Response.json(200, {"validationResponse": eventgrid.validation_code(items)})
        except eventgrid.BadRequest as e:
            return Response(400, str(e).encode(), [("content-type", "text/plain")])
        cloud = wants(function, func.CloudEvent)
        failed = 0
        for item in items:  # in order; one failure fails the batch, the others still run (Event Grid retries)
            try:
                await self.host.run(function, eventgrid.to_trigger(item, cloud_event_parameter=cloud))
            except Exception:  # noqa: BLE001 - logged by the invoker
                failed += 1
        return Response(500) if failed else Response(200)

    # -- the bridge's registry endpoint ----------------------------------------------------------------------
    async def _registry(self, request: Request) -> Response:
        bridge = self.host.bridge
        if bridge is None or not bridge.accepts_registry:
            return Response(404)
        if not bridge.authorizes(request.headers.get("authorization")):
            return Response(401)
        if request.method != "POST":
            return Response(405)
        count = await asyncio.to_thread(bridge.accept_registry, await request.body(MAX_REGISTRY_BODY))
        return Response.json(202, {"accepted": count})

    # -- admin -----------------------------------------------------------------------------------------------
    async def _admin(self, request: Request) -> Response:
        if not self.host.keys.allows("admin", request.key):
            return Response(401)
        if request.path == "/admin/host/status" and request.method == "GET":
            return Response.json(200, self.host.status())
        name = request.path.removeprefix("/admin/functions/").strip("/")
        if request.path.startswith("/admin/functions/") and "/" not in name and request.method == "POST":
            function = self.host.functions.get(name)
            if function is None:
                return Response(404)
            if function.kind == "http":
                return Response(400, b"HTTP functions run through their route", [("content-type", "text/plain")])
            body = await request.body(self.max_body)
            try:
                document = json.loads(body) if body.strip() else {}
                value = document.get("input", "") if isinstance(document, dict) else None
            except ValueError:
                value = None
            if not isinstance(value, str):
                return Response(400, b'the body is {"input": "<string>"}', [("content-type", "text/plain")])
            try:
                trigger = admin_trigger(function.kind, value, cloud=wants(function, func.CloudEvent))
            except eventgrid.BadRequest as e:
                return Response(400, str(e).encode(), [("content-type", "text/plain")])
            self.host.run_in_background(function, trigger)
            return Response(202)
        return Response(404)


def admin_trigger(kind: str, value: str, *, cloud: bool = False) -> Any:
    """The trigger value the admin endpoint hands a non-HTTP function, built from its "input" string."""
    if kind == "timer":
        return azf_timer.TimerRequest(past_due=False, schedule_status={}, schedule={"AdjustForDST": True})
    if kind == "queue":
        now = datetime.now(UTC)
        return azf_queue.QueueMessage(id=str(uuid.uuid4()), body=value.encode("utf-8"), dequeue_count=1,
                                 insertion_time=now, expiration_time=None, time_next_visible=now, pop_receipt=None)
    if kind == "eventgrid":
        items = eventgrid.parse_events(value.encode("utf-8"))
        if len(items) != 1:
            raise eventgrid.BadRequest("the input is one event")
        return eventgrid.to_trigger(items[0], cloud_event_parameter=cloud)
    raise eventgrid.BadRequest(f"cannot run a {kind} function from the admin endpoint")


def _observed(task: asyncio.Future[Any]) -> None:
    """Retrieves an invocation's exception (the invoker logged it), also when nobody awaits it any more."""
    if not task.cancelled():
        task.exception()
