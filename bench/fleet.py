#!/usr/bin/env python3
"""bench/fleet: ShipBot at fleet scale, on Azurite: does a trigger's cost stay flat as the ledger grows?

For each ledger size, a fresh ledger container holds a fleet of APPS applications (a fleet file applied as
`shipbot apply` does; each with its own branch of one git repository, its own model and staging -> production)
and RELEASES releases each, written through BlobLedger (so the release index is there), all green, staging
running the newest (the release reconcile wants: the branch's head with the model), production the one before.
Then, with the real wiring (shared/wiring.bot, the code the functions run: BlobLedger, BlobModels, GitSource,
the local builder's recipe):

    reconcile cold   a new process: the bot and its clients made, the fleet read, one application reconciled
                     (p50 of 3 processes; Python's imports shown apart)
    reconcile warm   the same application again in that process (p50 of 20)
    reconcile all    the reconcile timer: every application, as the host runs it (8 at once)
    status           `shipbot status` (the CLI, a new process) against the real local host (python -m stack.host
                     on its own port): every application's environments (p50 of 3)
    host memory      the host's peak resident memory (VmHWM) after status and a reconcile of every application
    bench memory     the measuring process's peak (ru_maxrss), which reconciled every application

Then the burst: 500 duplicate events (each application's model upload, 25 times with one event id as Event
Grid redelivers it and 25 times with new ids) over 10 applications, delivered from 16 threads at once to the
bot over the same Azurite ledger, and the jobs they start (test, rollouts) run the same way, with the build
service and the environments in memory (the ledger's conditional writes, event markers and leases are what
decide). It counts builds and staging rollouts per application.

Prints figures only; nothing is asserted. Needs the stack (`make stack`). Writing 100,000 releases takes a while
(about four writes each): --sizes picks the releases per application.

    PYTHONPATH=. .venv/bin/python bench/fleet.py [--apps 50] [--sizes 20,200,2000] [--burst-apps 10]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STARTED = time.perf_counter()
from azure.storage.blob import BlobServiceClient  # noqa: E402

from shared import events, fleet, jobs, wiring  # noqa: E402
from shared.adapters import blob_ledger, blob_storage, memory  # noqa: E402
from shared.bot import Bot  # noqa: E402
from shared.engine import Config, Engine  # noqa: E402
from shared.ports import Ports  # noqa: E402
from shared.releases import Deployment, Entry, Release, Status, release_id_for  # noqa: E402
from shared.settings import AZURITE, Settings  # noqa: E402

IMPORTED = time.perf_counter()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WRITERS = 2  # Azurite on MariaDB (SERIALIZABLE) deadlocks under many concurrent writers: 2 are as fast as 32 are not


def app_name(i: int) -> str:
    return f"app-{i:02d}"


def fleet_text(apps: int, repo: Path, base_port: int = 21000) -> str:
    lines = ["apps:"]
    for i in range(apps):
        lines += [f"  - name: {app_name(i)}",
                  f"    source: {{repository: \"{repo}\", branch: {app_name(i)}, "
                  "webhook_secret: \"setting:SHIPBOT_GITHUB_SECRET\"}",
                  f"    models: [m-{i:02d}]",
                  f"    image: bench/{app_name(i)}",
                  "    environments:",
                  f"      - {{name: staging, target: {{kind: local, port: {base_port + 2 * i}}}, rule: on_green}}",
                  f"      - {{name: production, target: {{kind: local, port: {base_port + 2 * i + 1}}}, "
                  "rule: schedule, schedule: \"0 0 2 * * *\"}"]
    return "\n".join(lines) + "\n"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


# -- the world ------------------------------------------------------------------------------------------------
def make_world(apps: int, per_app: int, work: Path) -> dict[str, str]:
    """A ledger of `apps` x `per_app` releases, a models container, a git repository; the settings (environ)."""
    tag = uuid.uuid4().hex[:8]
    bare, tree = work / "app.git", work / "tree"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=work)
    git("init", "--quiet", "--initial-branch=main", str(tree), cwd=work)
    (tree / "README").write_text("bench\n")
    git("add", "-A", cwd=tree)
    git("-c", "user.name=bench", "-c", "user.email=bench@x", "commit", "--quiet", "-m", "bench", cwd=tree)
    git("push", "--quiet", str(bare), "main", *[f"main:{app_name(i)}" for i in range(apps)], cwd=tree)
    environ = {"SHIPBOT_STORAGE": AZURITE, "SHIPBOT_LEDGER_CONTAINER": f"bench-ledger-{tag}",
               "SHIPBOT_MODELS_CONTAINER": f"bench-models-{tag}", "SHIPBOT_JOBS_QUEUE": f"bench-jobs-{tag}",
               "SHIPBOT_GIT_REPO": str(bare), "SHIPBOT_REPOSITORY": "bench/root", "SHIPBOT_STATE": str(work / "state"),
               "SHIPBOT_ENVIRONMENT_PREFIX": f"bench-{tag}", "SHIPBOT_GITHUB_SECRET": "bench-secret",
               "SHIPBOT_RECONCILE_SCHEDULE": "0 0 0 1 1 *", "SHIPBOT_PROMOTION_SCHEDULE": "0 0 0 1 1 *"}
    service = BlobServiceClient.from_connection_string(AZURITE)
    service.create_container(environ["SHIPBOT_MODELS_CONTAINER"])
    models = service.get_container_client(environ["SHIPBOT_MODELS_CONTAINER"])
    for i in range(apps):
        models.upload_blob(f"m-{i:02d}/1/model.joblib", f"model {i}".encode())

    bot = wiring.bot(Settings.from_env(environ))
    bot.ledger.put_fleet(fleet_text(apps, bare), by="bench", at=datetime.now(UTC), reason="bench")
    started, written = time.perf_counter(), 0
    with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
        for i in range(apps):
            written += populate(bot, app_name(i), per_app, pool)
            if i % 10 == 9:
                rate = written / (time.perf_counter() - started)
                print(f"    {written:>7} releases written ({rate:.0f}/s)", flush=True)
    return environ


def populate(bot: Bot, app: str, per_app: int, pool: concurrent.futures.Executor) -> int:
    engine = bot.engine(app)
    head = engine.ports.source.get_head(engine.config.release_branch)
    model = engine.ports.models.list_models(engine.config.models)[0]
    wanted = release_id_for(head.sha, model.sha256, engine.ports.builder.recipe)
    prefix = app.replace("app-", "")

    def release(n: int) -> Release:
        newest = n == per_app - 1
        at = T0 + timedelta(minutes=n)
        rid = wanted if newest else f"r-{prefix}{n:014x}"
        history = (Entry(at, "planned", "shipbot", "model_uploaded"), Entry(at, "built", "shipbot", "sha256:..."),
                   Entry(at, "smoke test passed", "shipbot", "/readyz 200, /score 200"),
                   Entry(at, "deployed to staging", "shipbot", "verified"))
        return Release(id=rid, created=at, trigger="bench", repository=engine.config.repository, tag=rid,
                       status=Status.GREEN, commit=head.sha, model=model if newest else None,
                       recipe=engine.ports.builder.recipe, digest="sha256:" + f"{prefix}{n:062x}",
                       deployed=("staging",) + (("production",) if n == per_app - 2 else ()), history=history)

    releases = [release(n) for n in range(per_app)]
    list(pool.map(engine.ledger.create_release, releases))
    newest, before = releases[-1], releases[-2]

    def running(current: Release, previous: Release | None, **more):
        entries = tuple(Entry(T0, "deployed", "shipbot", f"r-{k}") for k in range(100))
        return lambda e: e.with_(current=Deployment(current.id, current.ref, current.created, "shipbot"),
                                 previous=Deployment(previous.id, previous.ref, previous.created, "shipbot")
                                 if previous else None, history=entries, **more)

    engine.ledger.update_environment("staging", running(newest, before))
    # Its schedule already counted (no slot since): a reconcile then reads and writes nothing there.
    engine.ledger.update_environment("production", running(before, None, scheduled=datetime.now(UTC)))
    return per_app


def drop_world(environ: dict[str, str]) -> None:
    service = BlobServiceClient.from_connection_string(AZURITE)
    for key in ("SHIPBOT_LEDGER_CONTAINER", "SHIPBOT_MODELS_CONTAINER"):
        try:
            service.delete_container(environ[key])
        except Exception:  # noqa: BLE001 - best effort
            pass


# -- measuring, in a fresh process ------------------------------------------------------------------------------
def measure(environ: dict[str, str], app: str, rounds: int) -> dict:
    """One cold reconcile of `app`, then `rounds` warm ones, then every application's (the timer); and how
    many storage requests one warm reconcile makes (the same at any ledger size, if the cost is bounded)."""
    import requests

    sent = [0]
    send = requests.Session.send

    def counted(self, request, **kwargs):
        sent[0] += 1
        return send(self, request, **kwargs)

    requests.Session.send = counted  # the Azure SDK's transport: every storage request goes through it
    t = time.perf_counter()
    bot = wiring.bot(Settings.from_env(environ))
    first = bot.engine(app).reconcile(trigger="reconcile timer")
    cold = time.perf_counter() - t
    warm, requests_made = [], []
    for _ in range(rounds):
        before, t = sent[0], time.perf_counter()
        outcome = bot.engine(app).reconcile(trigger="reconcile timer")
        warm.append(time.perf_counter() - t)
        requests_made.append(sent[0] - before)
    t = time.perf_counter()
    routed = bot.handle(events.ReconcileDue(datetime.now(UTC)))
    every = time.perf_counter() - t
    return {"imports": IMPORTED - STARTED, "cold": cold, "warm_p50": statistics.median(warm),
            "warm_max": max(warm), "requests": statistics.median(requests_made), "all": every, "apps": len(routed.outcomes), "failure": repr(routed.failure) if routed.failure else "",
            "jobs": len(first.jobs) + len(outcome.jobs) + len(routed.jobs), "summary": outcome.summary,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measured(environ: dict[str, str], app: str, rounds: int = 20) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", json.dumps(environ), "--app", app,
                           "--rounds", str(rounds)], check=True, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- status, through the real host ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_status(environ: dict[str, str], work: Path) -> dict:
    from stack import keys, testing

    port = free_port()
    env = {**os.environ, **environ, "PYTHONPATH": str(ROOT)}
    Path(environ["SHIPBOT_STATE"]).mkdir(parents=True, exist_ok=True)
    log = open(work / "host.log", "ab")
    host = subprocess.Popen([sys.executable, "-m", "stack.host", "--port", str(port), "--no-bridge"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import httpx

        state = Path(environ["SHIPBOT_STATE"])

        def answers() -> bool:
            try:
                return (state / "host-keys.json").exists() and httpx.get(
                    f"http://127.0.0.1:{port}/admin/host/status", timeout=2,
                    headers={"x-functions-key": keys.HostKeys.load(state).master}).status_code == 200
            except httpx.HTTPError:
                return False  # not listening yet

        testing.eventually(answers, timeout=120, interval=0.2, what="the host answers")
        key = keys.HostKeys.load(state)
        cli = {**env, "SHIPBOT_API_URL": f"http://127.0.0.1:{port}", "SHIPBOT_API_KEY": key.default_function_key}
        times, lines = [], 0
        for _ in range(3):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "cli.main", "status"], cwd=ROOT, env=cli, check=True,
                                 capture_output=True, text=True).stdout
            times.append(time.perf_counter() - t)
            lines = len(out.splitlines())
        fired = httpx.post(f"http://127.0.0.1:{port}/admin/functions/reconcile", json={"input": ""},
                           headers={"x-functions-key": key.master}, timeout=10)
        assert fired.status_code == 202, fired.text
        testing.eventually(lambda: "of reconcile succeeded" in (work / "host.log").read_text(errors="replace")
                           or "of reconcile failed" in (work / "host.log").read_text(errors="replace"),
                           timeout=600, interval=0.2, what="the reconcile timer's run")
        hwm = next(int(line.split()[1]) for line in Path(f"/proc/{host.pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
        return {"status_p50": statistics.median(times), "status_max": max(times), "lines": lines,
                "host_mb": hwm / 1024}
    finally:
        os.killpg(host.pid, 15)
        host.wait(30)


# -- the burst ------------------------------------------------------------------------------------------------
def burst(apps: int, copies: int = 50, threads: int = 16) -> None:
    tag = uuid.uuid4().hex[:8]
    container = blob_storage.container_from_connection_string(AZURITE, f"bench-burst-{tag}")  # as wiring does
    container.create_container()
    builders: dict[str, memory.MemoryBuilder] = {}
    deployers: dict[str, memory.MemoryDeployer] = {}
    registry, models, source = memory.MemoryRegistry(), memory.MemoryModels(), memory.MemorySource()
    source.commit("c1" * 20, at=T0)
    for i in range(apps):
        models.put(f"m-{i:02d}", "1", {"model.joblib": f"model {i}".encode()}, uploaded=T0)

    def engine_for(app: fleet.App) -> Engine:
        builders.setdefault(app.name, memory.MemoryBuilder())
        deployers.setdefault(app.name, memory.MemoryDeployer())
        ledger = blob_ledger.BlobLedger(container=container, app=app.name)
        return Engine(Ports(ledger, source, models, builders[app.name], registry, memory.MemorySmokeRunner(),
                            deployers[app.name], memory.MemoryNotifier(), lambda: datetime.now(UTC)),
                      Config(repository=f"{registry.host}/{app.image}", models=tuple(app.models), app=app.name,
                             allowed_repositories=frozenset({f"{registry.host}/{app.image}"}),
                             chain=tuple(app.environments)))  # every app on one branch here: the engine reads main

    text = fleet_text(apps, Path("/bench/app.git"))
    root = blob_ledger.BlobLedger(container=container)
    root.put_fleet(text, by="bench", at=datetime.now(UTC), reason="burst")
    bot = Bot(ledger=root, default=fleet.parse(text), engine_for=engine_for, root="none")
    uploads = []
    for i in range(apps):
        model = models.get_model(f"m-{i:02d}", "1")
        for k in range(copies):
            event_id = f"e-{i}" if k < copies // 2 else f"e-{i}-{k}"  # redelivered, and uploaded again
            uploads.append(events.ModelUploaded(event_id, model.name, "1", model.blob_name,
                                                "http://bench/models", 10, '"0x1"', "0" * 16, T0))
    ran = {"jobs": 0, "errors": 0}

    def work(job: jobs.Job) -> None:
        todo = [job]
        while todo:
            try:
                todo += bot.run(todo.pop(0)).jobs
                ran["jobs"] += 1
            except Exception as e:  # noqa: BLE001 - counted and shown
                ran["errors"] += 1
                print(f"    job failed: {type(e).__name__}: {e}")

    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        routed = list(pool.map(bot.handle, uploads))
        started = time.perf_counter() - t
        for app_name_, builder in builders.items():  # the build service finishes each build; its push arrives
            for build_id in list(builder.requests):     # twice, as the registry's notification is at-least-once
                digest = builder.succeed(build_id, registry)
                request = builder.requests[build_id]
                push = events.ImagePushed(f"p-{build_id}-{app_name_}", registry.host,
                                          request.repository.split("/", 1)[1], request.tag, digest,
                                          "application/vnd.oci.image.manifest.v1+json", T0)
                for outcome in pool.map(bot.handle, [push] * 10):
                    list(pool.map(work, outcome.jobs))
    elapsed = time.perf_counter() - t
    builds = {app: len(b.requests) for app, b in sorted(builders.items())}
    rollouts = {app: sum(1 for env, _ in d.rollouts if env == "staging") for app, d in sorted(deployers.items())}
    print(f"  {len(uploads)} model-upload events over {apps} applications from {threads} threads, handled in "
          f"{started:.1f} s ({sum(len(r.outcomes) for r in routed)} outcomes); each build's push delivered 10 "
          f"times; everything in {elapsed:.1f} s")
    print(f"  builds per application:           {sorted(set(builds.values()))} (of {apps} applications)")
    print(f"  staging rollouts per application: {sorted(set(rollouts.values()))}; jobs run {ran['jobs']}, "
          f"failed {ran['errors']}")
    container.delete_container()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--sizes", default="20,200,2000", help="releases per application, one ledger each")
    parser.add_argument("--burst-apps", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="leave the ledgers in Azurite")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--app", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure), args.app, args.rounds)))
        return

    rows = []
    for per_app in (int(n) for n in args.sizes.split(",")):
        total = per_app * args.apps
        print(f"\n== {args.apps} applications x {per_app} releases = {total:,} release documents", flush=True)
        work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
        environ = make_world(args.apps, per_app, work)
        try:
            colds = [measured(environ, app_name(k * 7 % args.apps)) for k in range(3)]
            m = colds[0]
            print(f"  reconcile measured: cold {statistics.median(c['cold'] for c in colds):.3f} s, warm p50 "
                  f"{m['warm_p50']:.3f} s, {m['requests']:.0f} storage requests", flush=True)
            status = host_status(environ, work)
            row = {"total": total, "cold": statistics.median(c["cold"] for c in colds),
                   "imports": statistics.median(c["imports"] for c in colds), "warm": m["warm_p50"],
                   "warm_max": m["warm_max"], "all": m["all"], "rss": max(c["rss_mb"] for c in colds), **status}
            rows.append(row)
            print(f"  one app's reconcile: cold {row['cold']:.3f} s (+ {row['imports']:.2f} s of imports), "
                  f"warm p50 {row['warm']:.3f} s (max {row['warm_max']:.3f}, {m['requests']:.0f} storage requests); "
                  f"every app's: {row['all']:.2f} s "
                  f"({m['apps']} apps, {m['jobs']} jobs{', ' + m['failure'] if m['failure'] else ''}); "
                  f"\"{m['summary']}\"")
            print(f"  shipbot status: p50 {row['status_p50']:.2f} s ({row['lines']} lines); host peak "
                  f"{row['host_mb']:.0f} MB; bench process peak {row['rss']:.0f} MB", flush=True)
        finally:
            if not args.keep:
                drop_world(environ)
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'releases':>9} {'cold s':>7} {'warm p50 s':>11} {'all apps s':>11} {'status s':>9} "
          f"{'host MB':>8} {'bench MB':>9}")
    for r in rows:
        print(f"{r['total']:>9,} {r['cold']:>7.3f} {r['warm']:>11.3f} {r['all']:>11.2f} {r['status_p50']:>9.2f} "
              f"{r['host_mb']:>8.0f} {r['rss']:>9.0f}")
    print("goals: one app's reconcile p50 < 0.300 s warm and < 2 s cold; status < 3 s; host < 300 MB")

    print(f"\n== burst: duplicate events over {args.burst_apps} applications", flush=True)
    burst(args.burst_apps)


if __name__ == "__main__":
    main()
