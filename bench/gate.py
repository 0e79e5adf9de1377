"""bench/gate: what the quality gate costs. Builds the sample model's release image on the local stack, then runs
the real smoke runner (DockerSmokeRunner) on it with evaluation sets of 1,000, 10,000 and 50,000 rows (the
diabetes features, repeated), and prints the seconds of the evaluation step (every batch POSTed to the
candidate's /score through one connection) and of the metric and the verdict in pure Python (shared/gate.py),
for batch sizes 100, 500 and 2,000. The goal: a 10,000-row set in seconds, not minutes. Needs the local stack
(`make stack`). Prints figures only.

    python bench/gate.py [--rows 1000,10000,50000] [--batches 100,500,2000]
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
from pathlib import Path

import docker

from bench.image import REPOSITORY, build, train
from shared import evaluation, gate, ports
from shared.adapters.local.docker_builder import DockerBuilder
from shared.adapters.local.smoke import DockerSmokeRunner

ROOT = Path(__file__).resolve().parent.parent


def data_set(rows: int) -> bytes:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([f"x{i}" for i in range(X.shape[1])] + ["y"])
    for i in range(rows):
        writer.writerow([*X[i % len(X)].tolist(), float(y[i % len(y)])])
    return out.getvalue().encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000,10000,50000")
    parser.add_argument("--batches", default="100,500,2000")
    args = parser.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        built = build(DockerBuilder(client=client), train(Path(tmp, "m"), 1.0), "gate")
    runner = DockerSmokeRunner(client=client, budget_seconds=180, name_prefix="shipbot-bench-gate")
    expected = ports.Expectation(None)
    print(f"image {built.ref.rsplit('@', 1)[1][:19]}... ({REPOSITORY})")
    print(f"{'rows':>7}{'batch':>7}{'read s':>9}{'evaluate s':>12}{'rows/s':>10}{'metric s':>10}{'smoke total s':>15}")
    for rows in (int(n) for n in args.rows.split(",")):
        data = data_set(rows)
        spec = evaluation.Spec(data="eval.csv", label="y", metric="rmse", direction="lower", seconds=600)
        for batch in (int(n) for n in args.batches.split(",")):
            started = time.perf_counter()
            found = gate.data_set(spec, data)
            read = time.perf_counter() - started
            verdict = runner.run(built.ref, expected, evaluation=ports.Evaluation(found.rows, batch=batch,
                                                                                  seconds=600))
            if not verdict.passed:
                sys.exit(f"the evaluation failed: {verdict.reason}")
            scored = dict(verdict.steps)["evaluate"]
            started = time.perf_counter()
            figures = gate.judge(spec, found, verdict, None)
            metric = time.perf_counter() - started
            print(f"{rows:>7}{batch:>7}{read:>9.3f}{scored:>12.2f}{rows / scored:>10.0f}{metric:>10.3f}"
                  f"{verdict.seconds:>15.1f}   rmse {figures.value:.2f}")


if __name__ == "__main__":
    main()
