"""bench/apps: what an app with its own Dockerfile costs to build (samples/flask-app).

Builds the Flask sample's release image on the local Docker engine and pushes it to the local registry:
cold (no layer cache: its dependencies come from PyPI), then model-only (a new model version, same code:
only the model layer and the release metadata are rebuilt), and reports the model-only build as a share
of the cold one. Needs the local stack (`make stack`). Prints figures only.

    python bench/apps.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker

from shared.adapters.local.docker_builder import BuildRequest, DockerBuilder

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "127.0.0.1:5000/shipbot-bench/flask-app"


def model(out: Path, alpha: float) -> Path:
    subprocess.run([sys.executable, str(ROOT / "samples/diabetes/train.py"), str(out), "--alpha", str(alpha)],
                   check=True, capture_output=True)
    return out


def build(builder: DockerBuilder, source: Path, model_dir: Path, version: str) -> float:
    started = time.perf_counter()
    builder.build(BuildRequest(source=source, model_dir=model_dir, repository=REPOSITORY, tag=f"b-{uuid.uuid4().hex[:8]}",
                               model_name="diabetes", model_version=version, release_id=f"r-bench{version}"))
    return time.perf_counter() - started


def main() -> None:
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="shipbot-bench-apps-") as tmp:
        source = Path(tmp, "app")
        shutil.copytree(ROOT / "samples/flask-app", source)
        first, second = model(Path(tmp, "m1"), 1.0), model(Path(tmp, "m2"), 0.5)
        cold = build(DockerBuilder(client=client, use_cache=False), source, first, "1")
        cached = DockerBuilder(client=client)
        build(cached, source, first, "1")  # the cache holds this code and its dependencies now
        model_only = build(cached, source, second, "2")
    print(f"flask-app cold build + push (PyPI):  {cold:6.1f} s")
    print(f"flask-app model-only build + push:   {model_only:6.1f} s  ({model_only / cold:.0%} of cold)")


if __name__ == "__main__":
    main()
