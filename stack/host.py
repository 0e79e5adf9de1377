"""The local Functions host: serves any `azure.functions.FunctionApp` the way the Azure Functions host does.

    python -m stack.host [--port 7071] [--app function_app:app] [--folder .] [--no-bridge]

What it serves (see docs/local-host.md for how it differs from the real host):
- HTTP triggers under /api (host.json routePrefix), key auth; the Event Grid webhook; admin endpoints
  (stack.server);
- timer triggers: NCRONTAB schedules, run_on_startup, past-due catch-up (stack.timers);
- queue triggers and queue outputs on Azure Storage queues, i.e. Azurite (stack.queues);
- the event bridge that stands in for Event Grid: blob watcher and registry relay (stack.bridge).

Settings: local.settings.json (or local.settings.json.example) "Values" go into the process environment
without overriding what is set; `%NAME%` binding expressions and `connection` names resolve against it.
Keys: `$SHIPBOT_STATE/host-keys.json` (stack.keys). Log: JSON lines on stderr, keys redacted (stack.logs).
SIGTERM or SIGINT: stop accepting requests, finish the running ones, stop the bridge, the timers and the
queue pollers, and wait for the invocations they started.

`Host` is also what tests use: construct it with a FunctionApp and a settings dict, serve `Server(host)`
(stack.testing.serving). One Host per app object: the host reads its functions once, and a FunctionApp
refuses a second `get_functions()`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import azure.functions as func

from stack import config, functions, keys, logs, queues, routes, timers
from stack.bridge import Bridge, BridgeOptions
from stack.server import Server

log = logging.getLogger("stack.host")
DEFAULT_STATE = "/var/lib/shipbot"
REGISTRY_SECRET_FILE = "registry-notify.secret"


class Host:
    """One FunctionApp served locally. `start()`/`stop()` run the background parts; `Server(host)` the HTTP."""

    def __init__(self, app: func.FunctionApp, *, settings: Mapping[str, str], state_dir: Path,
                 folder: Path = Path("."), url: str = "http://127.0.0.1:7071", host_keys: keys.HostKeys | None = None,
                 options: config.HostOptions | None = None, clock: timers.Clock | None = None,
                 workers: int | None = None, bridge: BridgeOptions | None = None) -> None:
        self.settings, self.state_dir, self.folder, self.url = settings, state_dir, folder, url.rstrip("/")
        self.options = options or config.HostOptions.read(folder)
        self.keys = host_keys or keys.HostKeys.load(state_dir, environ=settings)
        self.functions = functions.index(app)
        self.router = routes.Router(
            routes.compile_route(f.trigger.get("route") or f.name, f.trigger.get("methods") or [], f)
            for f in self.functions.values() if f.kind == "http")
        self.clients = queues.Clients()
        self.invoker = functions.Invoker(
            send_queue=queues.QueueSender(self.clients, settings, encoding=self.options.queues.message_encoding),
            function_directory=str(folder), timeout=self.options.function_timeout)
        threads = workers or int(settings.get("PYTHON_THREADPOOL_THREAD_COUNT") or min(32, (os.cpu_count() or 1) + 4))
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="invocation")
        self.timers = timers.Timers(
            [timers.make_timer(f, config.resolve(f.trigger["schedule"], settings, what=f"timer {f.name!r}"))
             for f in self.functions.values() if f.kind == "timer"],
            self._fire_timer, clock=clock, status_dir=state_dir / "timers")
        self._queue_targets = {f.name: self._queue_target(f) for f in self.functions.values() if f.kind == "queue"}
        self.listeners: list[queues.QueueListener] = []
        self.bridge = self._bridge(bridge) if bridge is not None else None
        self.state = "Created"
        self._started = time.monotonic()
        self.id = uuid.uuid4().hex

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.state = "Initialized"
        for name, (connection, queue_name) in self._queue_targets.items():
            listener = queues.QueueListener(
                self.functions[name], self.clients.queue(connection, queue_name),
                self.clients.queue(connection, f"{queue_name}-poison"), self.invoker.invoke, self.pool,
                options=self.options.queues)
            listener.start()
            self.listeners.append(listener)
        self.timers.start()
        if self.bridge is not None:
            self.bridge.start()
        self.state = "Running"
        log.info("host running: %d functions %s", len(self.functions), sorted(self.functions),
                 extra={"fields": {"functions": sorted(self.functions), "url": self.url}})

    def stop(self) -> None:
        """Graceful: stop the sources of work, then wait for every invocation they started."""
        self.state = "Stopping"
        if self.bridge is not None:
            self.bridge.stop()
        self.timers.stop()
        for listener in self.listeners:
            listener.stop()
        self.pool.shutdown(wait=True)
        self.state = "Stopped"
        log.info("host stopped")

    # -- invocations -----------------------------------------------------------------------------------------
    async def run(self, function: functions.Function, trigger_value: Any) -> functions.Result:
        """Run one invocation on the worker pool; raises what the function raised."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.invoker.invoke, function,
                                                                trigger_value)

    def run_in_background(self, function: functions.Function, trigger_value: Any) -> Future[Any]:
        return self.pool.submit(self._quietly, function, trigger_value)

    def _quietly(self, function: functions.Function, trigger_value: Any) -> functions.Result | None:
        try:
            return self.invoker.invoke(function, trigger_value)
        except Exception:  # noqa: BLE001 - the invoker logged it; nobody waits for this one
            return None

    def _fire_timer(self, function: functions.Function, request: func.TimerRequest) -> Future[Any] | None:
        if self.state in ("Stopping", "Stopped"):
            return None
        return self.run_in_background(function, request)

    def status(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "version": "shipbot-local",
                "processUptime": int((time.monotonic() - self._started) * 1000),
                "functions": sorted(self.functions),
                "bridge": self.bridge.status() if self.bridge is not None else None}

    # -- wiring ----------------------------------------------------------------------------------------------
    def _queue_target(self, function: functions.Function) -> tuple[str, str]:
        what = f"queue trigger {function.name!r}"
        name = config.resolve(function.trigger["queueName"], self.settings, what=what).lower()
        return config.connection_string(function.trigger.get("connection"), self.settings, what=what), name

    def _bridge(self, options: BridgeOptions) -> Bridge:
        def target(name: str | None, source: str) -> str | None:
            if name and (name not in self.functions or self.functions[name].kind != "eventgrid"):
                log.warning("bridge: no Event Grid function %r in the app: %s are not delivered", name, source)
                return None
            return name

        options = dataclasses.replace(options, blob_function=target(options.blob_function, "blob events"),
                                      image_function=target(options.image_function, "registry pushes"),
                                      model_function=target(options.model_function, "model registrations"))
        storage = self.settings.get("SHIPBOT_STORAGE")
        if options.blob_function and not storage:
            log.warning("bridge: SHIPBOT_STORAGE is not set: no blob watcher")
        secret = keys.shared_secret(self.state_dir / REGISTRY_SECRET_FILE,
                                    override=self.settings.get("SHIPBOT_REGISTRY_NOTIFY_SECRET"))
        return Bridge(state_dir=self.state_dir, host_url=self.url, eventgrid_key=self.keys.eventgrid,
                      storage=storage, registry_secret=secret, options=options)


def import_app(reference: str) -> func.FunctionApp:
    """"module:attribute" -> the FunctionApp it names."""
    module_name, _, attribute = reference.partition(":")
    app = getattr(importlib.import_module(module_name), attribute or "app")
    if not isinstance(app, func.FunctionApp):
        raise SystemExit(f"{reference} is a {type(app).__name__}, not an azure.functions.FunctionApp")
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stack.host", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--folder", default=".", help="the app's folder: host.json, local.settings.json, imports")
    parser.add_argument("--state", default=None, help="state directory (default $SHIPBOT_STATE or /var/lib/shipbot)")
    parser.add_argument("--no-bridge", action="store_true", help="do not run the event bridge")
    parser.add_argument("--announce-existing-blobs", action="store_true",
                        help="on the bridge's first start, send BlobCreated for blobs that are already there")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    folder = Path(args.folder).resolve()
    sys.path.insert(0, str(folder))
    config.load_local_settings(folder, os.environ)
    state = Path(args.state or os.environ.get("SHIPBOT_STATE") or DEFAULT_STATE)
    redact = logs.Redactor()
    logs.configure(redact, level=getattr(logging, args.log_level.upper(), logging.INFO))
    host_keys = keys.HostKeys.load(state, environ=os.environ)
    redact.add(*host_keys.secrets(), os.environ.get("SHIPBOT_REGISTRY_NOTIFY_SECRET", ""))
    bridge = None
    if not args.no_bridge:
        redact.add(keys.shared_secret(state / REGISTRY_SECRET_FILE,
                                      override=os.environ.get("SHIPBOT_REGISTRY_NOTIFY_SECRET")))
        # The local stack's MLflow (scripts/local-stack.sh mlflow) unless SHIPBOT_MLFLOW_URI names another plain
        # server; an Azure ML workspace (azureml://) sends its own events, so it is not watched.
        mlflow = os.environ.get("SHIPBOT_MLFLOW_URI", "").strip() or "http://127.0.0.1:5050"
        bridge = BridgeOptions(models_container=os.environ.get("SHIPBOT_MODELS_CONTAINER", "models"),
                               announce_existing=args.announce_existing_blobs,
                               mlflow_uri=mlflow if mlflow.startswith(("http://", "https://")) else None)
    host = Host(import_app(args.app), settings=os.environ, state_dir=state, folder=folder,
                url=f"http://{args.bind}:{args.port}", host_keys=host_keys, bridge=bridge)
    serve(host, bind=args.bind, port=args.port)


def serve(host: Host, *, bind: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully (uvicorn drains requests, lifespan stops the host)."""
    import uvicorn

    # uvicorn handles SIGTERM itself (graceful shutdown), then re-raises it to the handler it found: this one,
    # so a host that stopped gracefully exits 0 rather than dying of the signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    timeout = host.options.function_timeout
    server = uvicorn.Server(uvicorn.Config(
        Server(host), host=bind, port=port, lifespan="on", access_log=False, log_config=None,
        timeout_graceful_shutdown=int(timeout.total_seconds()) if timeout else None))
    server.run()


if __name__ == "__main__":
    main()
