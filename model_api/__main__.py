"""`python -m model_api`: the production server, Granian (Rust HTTP, uvloop), one worker process per core.

Each worker loads its own copy of the model and scores on its own core; numeric libraries are held to one
thread each so that the workers do not fight over the cores. Metrics from all workers are summed through
prometheus_client's multiprocess directory, made fresh at every start.

Order matters: prometheus_client picks single- or multi-process mode when it is first imported, and Granian
forks its workers from this process, so the environment is set before anything imports model_api.telemetry.
"""

import os
import shutil
import tempfile

ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _prepare_environment() -> None:
    for name in ONE_THREAD:
        os.environ.setdefault(name, "1")
    metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="model_api-metrics-"))
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir)


def _log_config(level: str) -> dict:
    """Granian's own lines (start, worker spawn, errors) as JSON, like every other line the service writes."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "model_api.telemetry.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"_granian": {"level": level}, "granian.access": {"level": "WARNING"}},
    }


def main() -> None:
    _prepare_environment()
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    from model_api.settings import Settings

    settings = Settings.from_env()
    Server(
        "model_api.app:create_app", factory=True, interface=Interfaces.ASGI, loop=Loops.uvloop,
        address=settings.host, port=settings.port, workers=settings.worker_count(),
        log_dictconfig=_log_config("INFO"), log_access=False,  # model_api writes its own JSON access log
        respawn_failed_workers=True, workers_kill_timeout=20,
    ).serve()


if __name__ == "__main__":
    main()
