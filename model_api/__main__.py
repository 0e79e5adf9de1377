"""`python -m model_api`: the production server, uvicorn (uvloop + httptools), one worker process per core.

Each worker loads its own copy of the model and scores on its own core; numeric libraries are held to one
thread each so that the workers do not fight over the cores. Metrics from all workers are summed through
prometheus_client's multiprocess directory, made fresh at every start.

Why uvicorn: with dynamic batching (model_api/batching.py) it beat Granian by ~40 % on single-row /score
(httptools hands the loop every request a read brought in, so batches fill), and it is 18 MB smaller in
the image. docs/benchmarks.md has the runs.

Order matters: prometheus_client picks single- or multi-process mode when it is first imported, so the
environment is set before anything imports model_api.telemetry (uvicorn's workers inherit it).
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
    """uvicorn's own lines (start, workers, errors) as JSON, like every other line the service writes."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "model_api.telemetry.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"uvicorn.access": {"level": "WARNING"}},
    }


def main() -> None:
    _prepare_environment()
    import uvicorn

    from model_api.settings import Settings

    settings = Settings.from_env()
    uvicorn.run(
        "model_api.app:create_app", factory=True,
        host=settings.host, port=settings.port, workers=settings.worker_count(),
        loop="uvloop", http="httptools", lifespan="on",
        log_config=_log_config("INFO"), access_log=False,  # model_api writes its own JSON access log
        server_header=False, date_header=False, timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
