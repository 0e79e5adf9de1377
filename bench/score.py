#!/usr/bin/env python3
"""bench/score: model_api against azureml-inference-server-http (the "anchor"), on POST /score.

What it measures: requests/s and p50/p99 latency of each server scoring the same scikit-learn model
(samples/diabetes, Ridge on 10 features), for a single-row and a 100-row body, under the same closed-loop
load from wrk (2 threads, 32 connections by default) on this machine's 127.0.0.1.

How:
  1. The anchor goes in its own virtual environment, build/bench/anchor-venv (made once, then reused), with
     the scikit-learn/joblib/numpy versions that model_api pins, so that one model.joblib loads in both.
  2. The sample model is trained into build/bench/score/model; the anchor gets the plain Azure ML entry
     script an Azure ML user would write (json.loads -> np.array -> predict -> tolist).
  3. Both servers start with their production settings for 2 cores: the anchor as `azmlinfsrv` (its gunicorn,
     WORKER_COUNT=2), model_api as `python -m model_api` (2 uvicorn workers, default entry script, JSON access
     log on). Their output goes to log files under build/bench/score/. Each is polled on its health endpoint
     (with a deadline) until it answers and all its workers have logged that the model is loaded; then both
     must return the same predictions (within 1e-6) for both bodies.
  4. In each of --rounds rounds, for each body and server in turn (the other one idles): a short wrk warm-up,
     then the measured wrk run. Requests/s, p50 and p99 are read from wrk's --latency output; the table shows
     the median over the rounds, which interleave the servers so that noise on a shared machine hits both.
  5. A table with the ratio model_api/anchor and whether the goals hold. Timings are reported, never asserted:
     the exit status is non-zero only when something failed to run. Servers are stopped on error and Ctrl-C.

    bench/score [--duration 10] [--warmup 3] [--rounds 3] [--threads 2] [--connections 32]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
ANCHOR_VENV = BUILD / "anchor-venv"
ANCHOR = "azureml-inference-server-http==1.5.1"
WORKERS = 2  # production setting for this 2-core machine, for both servers
ROWS = (1, 100)
GOALS = {1: 4.0, 100: 3.0}  # model_api requests/s must be at least this many times the anchor's
TOLERANCE = 1e-6

# The anchor's entry script: what an Azure ML user writes for a joblib model.
SCORE_PY = '''\
import json
import os

import joblib
import numpy as np

model = None


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.joblib"))


def run(raw_data):
    data = json.loads(raw_data)
    preds = model.predict(np.array(data["data"]))
    return {"result": preds.tolist()}
'''

# wrk: POST the file named after `--` as a JSON body.
POST_LUA = '''\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.body = f:read("*a")
  f:close()
end
'''


class BenchError(Exception):
    """Something the benchmark needs did not work; the message says what."""


@dataclasses.dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    health: str  # path that answers 200 once the server can score
    ready_line: bytes  # what each worker logs once its model is loaded
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclasses.dataclass
class Result:
    rows: int
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers plus socket errors


# -- setup ---------------------------------------------------------------------------------------------------
def pinned(requirements: Path, name: str) -> str:
    for line in requirements.read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.strip()
    raise BenchError(f"{requirements} pins no {name}")


def anchor_venv(log: Path) -> Path:
    """The anchor's own venv (created once, reused while its requirements stay the same); its azmlinfsrv."""
    reqs = [ANCHOR, pinned(ROOT / "model_api" / "requirements.txt", "numpy")]
    reqs += [r for r in (ROOT / "model_api" / "requirements-sklearn.txt").read_text().split() if "==" in r]
    marker, exe = ANCHOR_VENV / "bench-requirements.txt", ANCHOR_VENV / "bin" / "azmlinfsrv"
    if exe.exists() and marker.exists() and marker.read_text() == "\n".join(reqs):
        return exe
    print(f"installing the anchor into {ANCHOR_VENV.relative_to(ROOT)}: {' '.join(reqs)}", flush=True)
    with log.open("w") as out:
        if not (ANCHOR_VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(ANCHOR_VENV)], check=True, stdout=out, stderr=out)
        pip = [str(ANCHOR_VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        if subprocess.run([*pip, *reqs], stdout=out, stderr=out, timeout=900).returncode != 0:
            raise BenchError(f"pip could not install the anchor; see {log}")
    marker.write_text("\n".join(reqs))
    return exe


def prepare(work: Path) -> dict[int, Path]:
    """Train the model into work/model, write the anchor's score.py and wrk's script; the body file per rows."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    subprocess.run([sys.executable, str(ROOT / "samples" / "diabetes" / "train.py"), str(work / "model")],
                   check=True, stdout=subprocess.DEVNULL)
    (work / "score.py").write_text(SCORE_PY)
    (work / "post.lua").write_text(POST_LUA)
    sample = json.loads((work / "model" / "sample-request.json").read_text())["data"]
    bodies = {}
    for rows in ROWS:
        bodies[rows] = work / f"body-{rows}.json"
        bodies[rows].write_text(json.dumps({"data": [sample[i % len(sample)] for i in range(rows)]}))
    return bodies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(work: Path, azmlinfsrv: Path) -> list[Server]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_API_", "AZUREML_", "WORKER_"))}
    base.pop("PROMETHEUS_MULTIPROC_DIR", None)
    model = str(work / "model")
    anchor_port = model_api_port = free_port()
    while model_api_port == anchor_port:
        model_api_port = free_port()
    anchor = Server(
        f"anchor (azmlinfsrv {ANCHOR.split('==')[1]})",
        [str(azmlinfsrv), "--entry_script", str(work / "score.py"), "--port", str(anchor_port)],
        {**base, "AZUREML_MODEL_DIR": model, "WORKER_COUNT": str(WORKERS)},
        "/", b"ready for serving traffic", anchor_port, work / "anchor.log")
    model_api = Server(
        "model_api", [sys.executable, "-m", "model_api"],
        {**base, "AZUREML_MODEL_DIR": model, "MODEL_API_HOST": "127.0.0.1", "MODEL_API_PORT": str(model_api_port),
         "MODEL_API_WORKERS": str(WORKERS), "MODEL_API_ACCESS_LOG": "true"},
        "/readyz", b'"message":"model ready"', model_api_port, work / "model_api.log")
    return [anchor, model_api]


# -- servers -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def running(server: Server, cwd: Path, ready_within: float = 120.0) -> Iterator[Server]:
    """Start the server in its own process group, wait until it is ready, and always stop it afterwards."""
    with server.log.open("wb") as log:
        proc = subprocess.Popen(server.cmd, env=server.env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(server, proc, time.monotonic() + ready_within)
        yield server
    finally:
        stop(proc)


def wait_ready(server: Server, proc: subprocess.Popen, deadline: float) -> None:
    """Poll the health endpoint until it answers 200 and every worker has logged that its model is loaded."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{server.name} exited with status {proc.returncode}; see {server.log}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(server.url(server.health), timeout=2) as response:
                if response.status == 200 and server.log.read_bytes().count(server.ready_line) >= WORKERS:
                    return
        time.sleep(0.1)
    raise BenchError(f"{server.name} was not ready on {server.url(server.health)} in time; see {server.log}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server (both shut their workers down on it); SIGKILL to its group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # any worker left behind in the group we started
    proc.wait()


def predictions(server: Server, body: bytes, deadline: float) -> list[float]:
    """POST /score; a 503 (a worker still loading the model) is retried until the deadline."""
    request = urllib.request.Request(server.url("/score"), data=body, headers={"Content-Type": "application/json"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["result"]
        except urllib.error.HTTPError as e:
            if e.code != 503 or time.monotonic() > deadline:
                raise BenchError(f"{server.name}: POST /score answered {e.code}: {e.read()[:300]!r}") from None
        time.sleep(0.1)


def check_same(anchor: Server, model_api: Server, bodies: dict[int, Path], expected: list[float]) -> None:
    deadline = time.monotonic() + 60
    for rows, path in bodies.items():
        a, m = (predictions(s, path.read_bytes(), deadline) for s in (anchor, model_api))
        worst = max(abs(x - y) for x, y in zip(a, m)) if len(a) == len(m) == rows else float("inf")
        if worst > TOLERANCE:
            raise BenchError(f"{rows}-row predictions differ (max |diff| {worst:g}): {a[:3]} vs {m[:3]}")
    sample = (bodies[1].parent / "model" / "sample-request.json").read_bytes()
    got = predictions(model_api, sample, deadline)
    if len(got) != len(expected) or max(abs(x - y) for x, y in zip(got, expected)) > TOLERANCE:
        raise BenchError(f"predictions for sample-request.json are not sample-response.json: {got}")
    print(f"same predictions from both servers (within {TOLERANCE:g}) for 1 and 100 rows", flush=True)


# -- load ----------------------------------------------------------------------------------------------------
def wrk(server: Server, body: Path, duration: int, args: argparse.Namespace) -> str:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
           "-s", str(body.parent / "post.lua"), server.url("/score"), "--", str(body)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(text: str, rows: int, server: str) -> Result:
    def ms(percentile: str) -> float:
        value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M).groups()
        return float(value) * UNITS_MS[unit]

    try:
        rps = float(re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M).group(1))
        p50, p99 = ms("50"), ms("99")
    except AttributeError:
        raise BenchError(f"cannot read wrk's output:\n{text}") from None
    socket_errors = re.search(r"Socket errors: (.*)", text)
    errors = sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1))) if socket_errors else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return Result(rows, server, rps, p50, p99, errors + (int(non_2xx.group(1)) if non_2xx else 0))


def measure(server: Server, rows: int, body: Path, args: argparse.Namespace, round_: int) -> Result:
    print(f"  round {round_}  {rows:>3} row(s)  {server.name}: warm-up {args.warmup}s, run {args.duration}s",
          flush=True)
    wrk(server, body, args.warmup, args)
    text = wrk(server, body, args.duration, args)
    slug = re.sub(r"\W+", "-", server.name).strip("-")
    (body.parent / f"wrk-{rows}-{slug}-round{round_}.txt").write_text(text)
    return parse_wrk(text, rows, server.name)


# -- report --------------------------------------------------------------------------------------------------
def summarise(results: list[Result]) -> dict[tuple[int, bool], Result]:
    """The median of each figure over the rounds, per (rows, is model_api); errors are summed."""
    groups: dict[tuple[int, bool], list[Result]] = {}
    for r in results:
        groups.setdefault((r.rows, r.server == "model_api"), []).append(r)
    return {key: Result(rs[0].rows, rs[0].server, statistics.median(r.rps for r in rs),
                        statistics.median(r.p50_ms for r in rs), statistics.median(r.p99_ms for r in rs),
                        sum(r.errors for r in rs)) for key, rs in groups.items()}


def report(results: list[Result], rounds: int) -> None:
    by = summarise(results)
    print(f"\nmedians over {rounds} round(s); 'range' is the lowest and highest requests/s of the rounds")
    print(f"{'payload':<9} {'server':<26} {'requests/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'range':>13} "
          f"{'model_api/anchor':>16}")
    for (rows, ours), r in sorted(by.items()):
        rps = [x.rps for x in results if x.rows == rows and x.server == r.server]
        ratio = f"{r.rps / by[rows, False].rps:.2f}x" if ours else ""
        flag = f"  ({r.errors} errors)" if r.errors else ""
        print(f"{rows_label(rows):<9} {r.server:<26} {r.rps:>10.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
              f"{f'{min(rps):.0f}-{max(rps):.0f}':>13} {ratio:>16}{flag}")
    print("\ngoals (on the medians):")
    for rows, goal in GOALS.items():
        anchor, ours = by[rows, False], by[rows, True]
        ratio = ours.rps / anchor.rps
        print(f"  {rows_label(rows):<9} requests/s >= {goal:g}x anchor: {ratio:.2f}x  -> {holds(ratio >= goal)}")
        print(f"  {rows_label(rows):<9} p99 no worse than anchor: {ours.p99_ms:.2f} ms vs {anchor.p99_ms:.2f} ms"
              f"  -> {holds(ours.p99_ms <= anchor.p99_ms)}")
    if any(r.errors for r in results):
        print("  note: some runs had errors (non-2xx answers or socket errors); see the wrk-*.txt files")


def rows_label(rows: int) -> str:
    return "1 row" if rows == 1 else f"{rows} rows"


def holds(ok: bool) -> str:
    return "holds" if ok else "DOES NOT HOLD"


# -- main ----------------------------------------------------------------------------------------------------
def positive(text: str) -> int:
    """A whole number >= 1 (wrk takes whole seconds)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=positive, default=10, help="seconds of each measured wrk run (10)")
    parser.add_argument("--warmup", type=positive, default=3, help="seconds of the wrk warm-up before each (3)")
    parser.add_argument("--rounds", type=positive, default=3, help="measured runs per server and body (3)")
    parser.add_argument("--threads", type=positive, default=2, help="wrk threads (2)")
    parser.add_argument("--connections", type=positive, default=32, help="wrk connections (32)")
    return parser.parse_args()


def bench(args: argparse.Namespace) -> list[Result]:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    BUILD.mkdir(parents=True, exist_ok=True)
    azmlinfsrv = anchor_venv(BUILD / "anchor-install.log")
    work = BUILD / "score"
    bodies = prepare(work)
    expected = json.loads((work / "model" / "sample-response.json").read_text())["result"]
    anchor, model_api = servers(work, azmlinfsrv)
    print(f"starting both servers ({WORKERS} workers each); logs in {work.relative_to(ROOT)}/", flush=True)
    with running(anchor, cwd=work), running(model_api, cwd=ROOT):
        check_same(anchor, model_api, bodies, expected)
        # Rounds interleave the servers, so that a slow spell of a shared machine falls on both alike.
        return [measure(server, rows, bodies[rows], args, round_) for round_ in range(1, args.rounds + 1)
                for rows in ROWS for server in (anchor, model_api)]


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops the servers as Ctrl-C does
    try:
        results = bench(args)
    except (BenchError, subprocess.SubprocessError, OSError) as e:
        print(f"bench/score: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/score: interrupted; servers stopped", file=sys.stderr)
        return 130
    report(results, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
