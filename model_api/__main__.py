"""`python -m model_api`: the production server, uvicorn (uvloop + httptools), one worker process per core.

Each worker loads its own copy of the model and scores on its own core; numeric libraries are held to one
thread each so that the workers do not fight over the cores. Metrics from all workers are summed through
prometheus_client's multiprocess directory, made fresh at every start.
"""

import os
import shutil
import tempfile

import uvicorn

from model_api import telemetry
from model_api.settings import Settings

ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def main() -> None:
    settings = Settings.from_env()
    for name in ONE_THREAD:
        os.environ.setdefault(name, "1")
    metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="model_api-metrics-"))
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir)
    telemetry.configure_logging()
    uvicorn.run(
        "model_api.app:create_app", factory=True,
        host=settings.host, port=settings.port, workers=settings.worker_count(),
        loop="uvloop", http="httptools", lifespan="on",
        log_config=None, access_log=False,  # model_api writes its own JSON access log
        server_header=False, timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
