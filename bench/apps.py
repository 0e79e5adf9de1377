"""bench/apps: what an app with its own Dockerfile costs (samples/flask-app).

build     builds the Flask sample's release image on the local Docker engine and pushes it to the local
          registry: cold (no layer cache: its dependencies come from PyPI), then model-only (a new model
          version, same code: only the model layer and the release metadata are rebuilt), and reports the
          model-only build as a share of the cold one.
release   the whole chain for the Flask sample on the real local host (tests/integration/release_stack.Bot:
          its own ledger, repository and environments; a host `shipbot up` started is stopped meanwhile and
          started again after): the app is pushed, then each run uploads a new model version and times
          upload finished -> staging's /about names the new release (polled every 50 ms). p50 and max.

Needs the local stack (`make stack`). Prints figures only.

    python bench/apps.py [build|release] [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
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


def release(runs: int) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import httpx
    from release_stack import Bot, previous_host

    previous = previous_host()
    totals: list[float] = []
    with tempfile.TemporaryDirectory(prefix="shipbot-bench-release-") as tmp:
        bot = Bot(Path(tmp), app=ROOT / "samples/flask-app").start()
        try:
            bot.commit_and_push("the Flask app")
            for version in range(1, runs + 2):  # the first warms the layer cache: not counted
                folder = model(Path(tmp, f"m{version}"), 1.0 / version)
                bot.upload_model(folder, str(version))
                uploaded = time.perf_counter()
                planned = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == str(version),
                                           what=f"model v{version} planned")
                url = f"http://127.0.0.1:{bot.ports['staging']}/about"
                while _about(httpx, url).get("release_id") != planned["id"]:
                    if bot.release(planned["id"])["status"] == "failed":
                        raise SystemExit(f"{planned['id']} failed: {bot.release(planned['id'])['reason']}")
                    time.sleep(0.05)  # polling for the figure, not synchronising a test
                took = time.perf_counter() - uploaded
                print(f"model v{version}: upload -> staging serves {planned['id']}  {took:5.1f} s"
                      + ("  (warm-up, not counted)" if version == 1 else ""))
                totals += [took] if version > 1 else []
        finally:
            bot.stop()
            if previous is not None:
                from stack import lifecycle
                lifecycle.up(previous)
    print(f"flask-app upload -> staging: p50 {statistics.median(totals):.1f} s, max {max(totals):.1f} s "
          f"over {len(totals)} runs")


def _about(httpx, url: str) -> dict:
    try:
        return httpx.get(url, timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=("build", "release"), default="build")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.what == "release":
        return release(args.runs)
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
