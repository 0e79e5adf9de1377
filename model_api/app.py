"""The scoring service: a plain ASGI application, so that nothing stands between the server and the model.

Routes (the contract; see docs/model-api.md):
    GET  /  /healthz                  liveness, no I/O
    GET  /readyz                      200 once the model is loaded and a warm-up run passed, else 503
    GET  /version                     build metadata: model name/version/sha256, commit, image, build, release
    POST /score                       Azure ML: the body goes to the entry script's run() as a string
    GET  /v2  /v2/health/live  /v2/health/ready
    GET  /v2/models/{name}[/versions/{v}]            V2 model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer      V2 inference
    GET  /metrics                     Prometheus text

Every answer is JSON (but /metrics), every error an errors.ApiError with a 4xx/5xx status. Each response
carries x-request-id (the caller's, or a new one) and echoes a valid W3C traceparent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from model_api import batching, errors, scoring, telemetry, v2
from model_api.settings import Settings

log = logging.getLogger("model_api")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


class Request:
    __slots__ = ("method", "path", "headers", "body", "params")

    def __init__(self, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.method, self.path, self.headers = method, path, headers
        self.body = b""
        self.params: dict[str, str] = {}

    def header_dict(self) -> dict[str, str]:
        """Headers as Azure ML's server hands them to run(): 'Content-Type': 'application/json'."""
        return {k.decode("latin-1").title(): v.decode("latin-1") for k, v in self.headers}


@dataclasses.dataclass(frozen=True, slots=True)
class Text:
    """A body that is not JSON (/metrics): sent as is, with its own content type."""

    body: bytes
    content_type: bytes


Handler = Callable[["App", Request], tuple[int, Any] | Awaitable[tuple[int, Any]]]


class App:
    def __init__(self, settings: Settings, *, access_log: telemetry.AccessLog | None = None) -> None:
        self.settings = settings
        self.model = scoring.Model(settings)
        self.metrics = telemetry.Metrics()
        self.access_log = access_log or telemetry.AccessLog(enabled=settings.access_log)
        self._version = orjson.dumps(dataclasses.asdict(settings.build))
        self.batcher = batching.Batcher(self.model.score_batch, max_items=settings.batch_max_requests,
                                        max_bytes=settings.batch_max_bytes, on_batch=self.metrics.batch)
        self._loader: asyncio.Future[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> asyncio.Future[None]:
        """Begin loading the model in a thread; scoring will run on this (the event loop's) thread."""
        if self._loader is None:
            self.model.install_deadline()
            self._loader = asyncio.get_running_loop().run_in_executor(None, self._load)
        return self._loader

    def _load(self) -> None:
        self.model.load()
        self.metrics.model_loaded(self.model.load_seconds, self.model.state == scoring.READY)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- ASGI -----------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if self._loader is None:  # a server that skips lifespan events still gets a model
            self.start()
        request = Request(scope["method"], scope["path"], scope["headers"])
        request_id = traceparent = None
        length = -1
        for name, value in request.headers:
            if name == b"x-request-id":
                request_id = value
            elif name == b"traceparent":
                traceparent = value
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
        if request_id is None or not REQUEST_ID.fullmatch(request_id.decode("latin-1")):
            request_id = uuid.uuid4().hex.encode()
        trace = TRACEPARENT.fullmatch(traceparent.decode("latin-1")) if traceparent else None

        route, handler = self._route(request)
        content_type = JSON
        try:
            if handler is None:
                raise errors.NotFound(f"no route {request.method} {request.path}")
            if request.method == "POST":
                request.body = await self._read_body(receive, length)
            answer = handler(self, request)
            status, payload = answer if type(answer) is tuple else await answer
            if type(payload) is Text:
                body, content_type = payload.body, payload.content_type
            else:
                body = payload if isinstance(payload, bytes) else scoring.dumps(payload)
        except errors.ApiError as e:
            status, body = e.status, orjson.dumps({"error": {"code": type(e).__name__, "message": e.message}})
        except orjson.JSONEncodeError as e:  # run() returned something that is not JSON
            log.error("response is not JSON-serialisable", exc_info=e)
            status, body = 500, b'{"error":{"code":"ScoringFailed","message":"run() returned a value that is not JSON"}}'

        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", request_id)]
        if trace:
            headers.append((b"traceparent", traceparent))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

        elapsed = time.perf_counter() - started
        self.metrics.observe(route, request.method, status, elapsed)
        self.access_log.write({
            "level": "info", "message": "request", "method": request.method, "path": request.path,
            "route": route, "status": status, "duration_ms": round(elapsed * 1000, 3),
            "bytes_in": len(request.body), "bytes_out": len(body), "request_id": request_id.decode(),
            "trace_id": trace.group(1) if trace else None,
        })

    async def _read_body(self, receive: Receive, length: int) -> bytes:
        limit = self.settings.max_body_bytes
        if length > limit:
            raise errors.PayloadTooLarge(f"body of {length} bytes is over the limit of {limit}")
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise errors.PayloadTooLarge(f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- routing --------------------------------------------------------------------------------------------
    def _route(self, request: Request) -> tuple[str, Handler | None]:
        """(route template for metrics, handler) for the request; a wrong method gets the 405 handler."""
        path = request.path
        if path.startswith("/v2/models/"):
            name, _, rest = path[len("/v2/models/"):].partition("/")
            request.params["name"] = name
            if rest.startswith("versions/"):
                version, _, rest = rest[len("versions/"):].partition("/")
                request.params["version"] = version
            template = "/v2/models/{name}" + (f"/{rest}" if rest else "")
            methods = MODEL_ROUTES.get(rest)
        else:
            template, methods = path, ROUTES.get(path)
        if methods is None:
            return "unmatched", None
        handler = methods.get(request.method)
        return template, handler if handler is not None else _method_not_allowed

    # -- handlers -------------------------------------------------------------------------------------------
    def live(self, request: Request) -> tuple[int, Any]:
        return 200, b'{"status":"alive"}'

    def ready(self, request: Request) -> tuple[int, Any]:
        model = self.model
        if model.state == scoring.READY:
            return 200, b'{"status":"ready"}'
        return 503, {"status": model.state, "error": model.error}

    def version(self, request: Request) -> tuple[int, Any]:
        return 200, self._version

    def score(self, request: Request) -> tuple[int, Any]:
        try:
            raw = request.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise errors.BadRequest(f"body is not UTF-8: {e}") from None
        if self.settings.batch_max_requests > 1 and self.model.batches:
            return self._score_batched(raw)
        return 200, self.model.score(raw, request.header_dict)

    async def _score_batched(self, raw: str) -> tuple[int, Any]:
        return 200, await self.batcher.submit(raw, len(raw))

    def metrics_text(self, request: Request) -> tuple[int, Any]:
        body, content_type = self.metrics.exposition()
        return 200, Text(body, content_type.encode())

    def v2_server(self, request: Request) -> tuple[int, Any]:
        return 200, {"name": "model_api", "version": "2", "extensions": []}

    def v2_live(self, request: Request) -> tuple[int, Any]:
        return 200, b'{"live":true}'

    def v2_ready(self, request: Request) -> tuple[int, Any]:
        ready = self.model.state == scoring.READY
        return (200 if ready else 503), {"ready": ready}

    def v2_model(self, request: Request) -> tuple[int, Any]:
        self._check_model(request)
        script = self.model.ready_script()
        meta = script.metadata() if script.metadata else {
            "platform": "azureml_entry_script",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, -1]}],
            "outputs": [{"name": "output-0", "datatype": "FP64", "shape": [-1]}],
        }
        version = self.settings.build.model_version
        return 200, {"name": self.settings.model_name, "versions": [version] if version else [], **meta}

    def v2_model_ready(self, request: Request) -> tuple[int, Any]:
        self._check_model(request)
        return self.v2_ready(request)

    def v2_infer(self, request: Request) -> tuple[int, Any]:
        self._check_model(request)
        request_id, inputs = v2.parse_infer_request(request.body)
        outputs = self.model.infer(inputs)
        return 200, v2.infer_response(self.settings.model_name, self.settings.build.model_version,
                                      request_id, outputs)

    def _check_model(self, request: Request) -> None:
        name, version = request.params["name"], request.params.get("version")
        if name != self.settings.model_name:
            raise errors.NotFound(f"no model named {name!r}; this server serves {self.settings.model_name!r}")
        if version is not None and version != self.settings.build.model_version:
            raise errors.NotFound(f"model {name!r} has no version {version!r}")


def _method_not_allowed(app: App, request: Request) -> tuple[int, Any]:
    raise errors.MethodNotAllowed(f"{request.method} is not allowed on {request.path}")


ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"GET": App.live},
    "/healthz": {"GET": App.live},
    "/readyz": {"GET": App.ready},
    "/version": {"GET": App.version},
    "/score": {"POST": App.score},
    "/metrics": {"GET": App.metrics_text},
    "/v2": {"GET": App.v2_server},
    "/v2/health/live": {"GET": App.v2_live},
    "/v2/health/ready": {"GET": App.v2_ready},
}
MODEL_ROUTES: dict[str, dict[str, Handler]] = {
    "": {"GET": App.v2_model},
    "ready": {"GET": App.v2_model_ready},
    "infer": {"POST": App.v2_infer},
}


def create_app() -> App:
    """The factory the server calls in each worker process."""
    telemetry.configure_logging()
    return App(Settings.from_env())
