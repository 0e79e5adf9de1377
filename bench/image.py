"""bench/image: what a release image costs to build and to carry.

Builds the sample model's release image three ways on the local Docker engine and pushes each to the local
registry: cold (no layer cache: dependencies come from PyPI), warm (same inputs again), and model-only (a
new model version, same code). Prints the seconds of each, the image size on disk and in the registry
(compressed: what a node pulls), its largest layers, and how long a container of it takes from start to
`/readyz` answering 200 (import, model load, warm-up; 3 starts). Needs the local stack (`make stack`).
Prints figures only.

    python bench/image.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
import httpx

from shared.adapters.local import containers
from shared.adapters.local.docker_builder import BuildRequest, BuiltImage, DockerBuilder

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "127.0.0.1:5000/shipbot-bench/model-api"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def train(out: Path, alpha: float) -> Path:
    subprocess.run([sys.executable, str(ROOT / "samples/diabetes/train.py"), str(out), "--alpha", str(alpha)],
                   check=True, capture_output=True)
    return out


def build(builder: DockerBuilder, model_dir: Path, version: str) -> BuiltImage:
    return builder.build(BuildRequest(source=ROOT, model_dir=model_dir, repository=REPOSITORY,
                                      tag=f"bench-{version}-{uuid.uuid4().hex[:8]}", model_name="diabetes",
                                      model_version=version))


def pulled_bytes(built: BuiltImage) -> int:
    """The image's layers as the registry stores and a node pulls them (gzip-compressed)."""
    registry, _, name = built.repository.partition("/")
    manifest = httpx.get(f"http://{registry}/v2/{name}/manifests/{built.digest}", headers={"Accept": MANIFEST})
    manifest.raise_for_status()
    return sum(layer["size"] for layer in manifest.json()["layers"])


def seconds_to_ready(client: docker.DockerClient, built: BuiltImage) -> float:
    container = containers.create_model_api(client, built.ref, name=f"shipbot-bench-{uuid.uuid4().hex[:8]}",
                                            host_port=None)
    try:
        started = time.perf_counter()
        container.start()
        port = containers.host_port(container)
        containers.wait_ready(f"http://127.0.0.1:{port}", timeout_s=120, container=container)
        return time.perf_counter() - started
    finally:
        container.remove(force=True)


def main() -> None:
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        v1, v2 = train(Path(tmp, "v1"), 1.0), train(Path(tmp, "v2"), 2.0)
        runs = [
            ("cold (no cache)", build(DockerBuilder(client=client, use_cache=False), v1, "1")),
            ("warm (same inputs)", build(DockerBuilder(client=client), v1, "1")),
            ("model-only change", build(DockerBuilder(client=client), v2, "2")),
        ]
    print(f"{'build':<22}{'build s':>9}{'push s':>9}")
    for name, built in runs:
        print(f"{name:<22}{built.build_seconds:>9.1f}{built.push_seconds:>9.1f}")

    image = client.images.get(runs[-1][1].ref)
    print(f"\nimage size: {image.attrs['Size'] / 1e6:.0f} MB (base {client.images.get('python:3.11-slim').attrs['Size'] / 1e6:.0f} MB)")
    print(f"in the registry (compressed, what a node pulls): {pulled_bytes(runs[-1][1]) / 1e6:.0f} MB")
    print("largest layers:")
    layers = sorted(image.history(), key=lambda layer: layer["Size"], reverse=True)[:4]
    for layer in layers:
        print(f"  {layer['Size'] / 1e6:>7.1f} MB  {layer['CreatedBy'][:90]}")
    starts = [seconds_to_ready(client, runs[-1][1]) for _ in range(3)]
    print(f"container start -> /readyz 200: median {statistics.median(starts):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in starts)})")


if __name__ == "__main__":
    main()
