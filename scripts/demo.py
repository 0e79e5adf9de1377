"""`make demo`, for now: one release image, end to end on the local stack.

Trains the sample model, builds the release image (model_api + model) on the Docker engine, pushes it to the
local registry, runs it by digest as the `shipbot-staging` container on 127.0.0.1:8081, and shows a real
scoring call and /version. The container keeps running; `docker rm -f shipbot-staging` stops it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import docker
import httpx

from shared.adapters.local import containers
from shared.adapters.local.docker_builder import BuildRequest, DockerBuilder

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
REPOSITORY = f"{REGISTRY}/model-api"
NAME, PORT = "shipbot-staging", 8081


def step(message: str) -> float:
    print(f"\n==> {message}", flush=True)
    return time.perf_counter()


def git_commit() -> str | None:
    result = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or None


def main() -> None:
    model_dir = ROOT / "build" / "models" / "diabetes" / "1"
    step("training the sample model (Ridge on scikit-learn's diabetes data)")
    subprocess.run([sys.executable, str(ROOT / "samples/diabetes/train.py"), str(model_dir)], check=True)

    commit = git_commit()
    step(f"building the release image with the Docker engine and pushing it to {REGISTRY}")
    built = DockerBuilder(client=docker.from_env()).build(BuildRequest(
        source=ROOT, model_dir=model_dir, repository=REPOSITORY, tag=f"diabetes-1-{(commit or 'dev')[:12]}",
        model_name="diabetes", model_version="1", git_commit=commit, source_url=f"file://{ROOT}"))
    print(f"    built in {built.build_seconds:.1f} s, pushed in {built.push_seconds:.1f} s")
    print(f"    {built.ref}")

    t = step(f"running it by digest as {NAME} on 127.0.0.1:{PORT}")
    client = docker.from_env()
    container = containers.run_model_api(client, built.ref, name=NAME, host_port=PORT)
    base = f"http://127.0.0.1:{PORT}"
    containers.wait_ready(base, timeout_s=90, container=container)
    print(f"    ready in {time.perf_counter() - t:.1f} s")

    request = json.loads((model_dir / "sample-request.json").read_text())
    step(f"POST {base}/score  (the model's sample request, {len(request['data'])} rows)")
    scored = httpx.post(f"{base}/score", json=request, headers={"x-request-id": "demo-1"})
    print(f"    {scored.status_code} {scored.text}")
    expected = json.loads((model_dir / "sample-response.json").read_text())["result"]
    matches = all(abs(a - b) <= 1e-6 for a, b in zip(scored.json()["result"], expected, strict=True))
    print(f"    matches sample-response.json: {matches}")

    step(f"GET {base}/version")
    print("    " + json.dumps(httpx.get(f"{base}/version").json(), indent=2).replace("\n", "\n    "))
    print(f"\nThe release is running: {base}/score, {base}/v2/models/diabetes, {base}/metrics")
    print(f"Stop it with: docker rm -f {NAME}")
    if not matches:
        sys.exit("the running image did not reproduce the model's sample response")


if __name__ == "__main__":
    main()
