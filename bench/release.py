#!/usr/bin/env python3
"""bench/release: from a model upload to staging answering /version with the new release.

On the local stack that `shipbot up` starts (the same one `make demo` uses), each run uploads a new model
version (new weights, so a new release) and times, from the ledger's history and a poll of staging:

    delivery   upload finished -> the model_uploaded function planned the release (blob watcher + Event Grid)
    image      build started -> the image_pushed function saw the image: build, push, registry notification
    (build, push: the builder's own figures inside `image`, when it had them at push time)
    queue      image seen -> smoke test started (the work queue)
    smoke      the smoke test (container start, /readyz, /version, sample /score)
    rollout    smoke test passed -> staging verified: its job through the work queue, then start, ready, verify
               and switch of the staging container
    total      upload finished -> staging's /version reports the release (polled every 50 ms)

Prints each run, then p50 and max per step. Timings are reported, never asserted.

    PYTHONPATH=. .venv/bin/python bench/release.py [--runs 5]
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli import main as cli  # noqa: E402
from scripts import demo  # noqa: E402

STEPS = ("delivery", "image", "build", "push", "queue", "smoke", "rollout", "total")
SECONDS = re.compile(r"(\w+) ([0-9.]+) s")


def at(entry: dict) -> float:
    return datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).timestamp()


def steps(detail: str) -> dict[str, float]:
    return {name: float(value) for name, value in SECONDS.findall(detail)}


def one_run(client, service, version: int, timeout_s: float) -> dict[str, float]:
    demo.upload(service, version)
    uploaded = time.time()
    release = demo.follow(client, "staging", model_version=version, quiet=True)
    staging = {e["name"]: e for e in client.list_environments()}["staging"]["url"]
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{staging}/version", timeout=5).json().get("release_id") != release["id"]:
        if time.monotonic() > deadline:
            raise SystemExit(f"staging did not report {release['id']}")
        time.sleep(0.05)
    done = time.time()
    history = {e["what"]: e for e in client.get_release(release["id"])["history"]}
    built = steps(history["image pushed"]["detail"])
    return {
        "delivery": at(history["planned"]) - uploaded,
        "image": at(history["image pushed"]) - at(history["build started"]),
        "build": built.get("build", float("nan")),
        "push": built.get("push", float("nan")),
        "queue": at(history["smoke test started"]) - at(history["image pushed"]),
        "smoke": at(history["smoke test passed"]) - at(history["smoke test started"]),
        "rollout": at(history["deployed to staging"]) - at(history["smoke test passed"]),
        "total": done - uploaded,
    }


def _stat(how, rows: list[dict[str, float]], step: str) -> str:
    values = [r[step] for r in rows if not math.isnan(r[step])]
    return f"{how(values):.1f}" if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if cli.main(["up"]) != 0:
        return 1
    client, service = demo.connect()
    demo.app_repository(demo.STATE / "secrets" / "github-webhook-secret", demo.WEBHOOK_URL)
    first = demo.next_version(service)
    demo.train(first)  # warm the trainer outside the timings
    print(f"{'run':<5}" + "".join(f"{s:>10}" for s in STEPS) + "   (seconds)")
    rows = []
    for run in range(args.runs):
        row = one_run(client, service, first + run, args.timeout)
        rows.append(row)
        print(f"{run + 1:<5}" + "".join(f"{row[s]:>10.1f}" if not math.isnan(row[s]) else f"{'-':>10}"
                                         for s in STEPS), flush=True)
    print(f"{'p50':<5}" + "".join(f"{_stat(statistics.median, rows, s):>10}" for s in STEPS))
    print(f"{'max':<5}" + "".join(f"{_stat(max, rows, s):>10}" for s in STEPS))
    print("rollout steps of the last run:", client.get_release(client.list_releases(limit=1)[0]["id"])
          ["history"][-1]["detail"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
