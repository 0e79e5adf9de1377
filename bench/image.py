"""bench/image: what a release image costs to build and to carry.

Builds the sample model's release image three ways on the local Docker engine and pushes each to the local
registry: cold (no layer cache: dependencies come from PyPI), warm (same inputs again), and model-only (a
new model version, same code). Prints the seconds of each, the image size and its largest layers. Needs
the local stack (`make stack`). Prints figures only.

    python bench/image.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import docker

from shared.adapters.local.docker_builder import BuildRequest, BuiltImage, DockerBuilder

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "127.0.0.1:5000/shipbot-bench/model-api"


def train(out: Path, alpha: float) -> Path:
    subprocess.run([sys.executable, str(ROOT / "samples/diabetes/train.py"), str(out), "--alpha", str(alpha)],
                   check=True, capture_output=True)
    return out


def build(builder: DockerBuilder, model_dir: Path, version: str) -> BuiltImage:
    return builder.build(BuildRequest(source=ROOT, model_dir=model_dir, repository=REPOSITORY,
                                      tag=f"bench-{version}-{uuid.uuid4().hex[:8]}", model_name="diabetes",
                                      model_version=version))


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
    print("largest layers:")
    layers = sorted(image.history(), key=lambda layer: layer["Size"], reverse=True)[:4]
    for layer in layers:
        print(f"  {layer['Size'] / 1e6:>7.1f} MB  {layer['CreatedBy'][:90]}")


if __name__ == "__main__":
    main()
