#!/usr/bin/env python3
"""`make demo`: ShipBot's main job, live, on the local stack.

1. `shipbot up`: the Docker engine, the registry, Azurite and the local functions host with its event bridge.
2. The app repository: a bare git repository (SHIPBOT_GIT_REPO) whose post-receive hook sends a signed
   GitHub-format push webhook; the app (model_api/) is committed in a clone and pushed to `main`.
3. A data scientist uploads the sample model v<n> to the models container: the bridge turns the new blob into
   Event Grid's BlobCreated, ShipBot builds the image, the registry's push becomes ImagePushed, the image is
   smoke-tested and rolled out to staging. The demo follows the release's ledger history as it happens.
4. The release is promoted to production (what the nightly timer does at 02:00 UTC).
5. Model v<n+1> is uploaded: staging moves to it, production stays.
6. The developer replaces the app with one that is not model_api: samples/flask-app, its own Dockerfile and
   routes (shipbot.toml). ShipBot builds it with that Dockerfile and the current model, smoke-tests it through
   its own /healthcheck, /score and /about, and rolls it out to staging; production keeps model_api.
7. A second application joins by a fleet file (`shipbot apply`): samples/mlops-score, an Azure ML score.py
   repository with its own git repository and image, through dev -> qa -> prod. Its push builds it with the
   current model and dev takes it; qa waits for an approval (`shipbot approve`), and prod is promoted by hand.
   The first application goes on as before.
8. A third application takes its models from the local MLflow model registry, with a quality gate
   (samples/mlflow-app: rmse on held-out rows, against production's). A data scientist registers versions with
   the real MLflow library (samples/diabetes/register.py): the first goes to staging and production; a better
   one passes the gate and goes to staging; a worse one is stopped by the gate, both figures printed.
9. The status of the applications, and the URLs. The stack keeps running; `shipbot down` stops it.

Run again, it uploads the next two model versions (each with its own weights, so each is a new release); both
applications follow the model.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from azure.storage.blob import BlobServiceClient

from cli import client as api
from cli import main as cli
from shared.settings import AZURITE
from stack import keys

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("SHIPBOT_STATE", "/var/lib/shipbot"))
BARE = STATE / "app.git"
WORK = STATE / "app-src"
SECOND = "scoring"  # the second application: samples/mlops-score in its own repository
SECOND_BARE, SECOND_WORK = STATE / "scoring.git", STATE / "scoring-src"
SECOND_PORTS = {"dev": 8091, "qa": 8092, "prod": 8093}
THIRD = "registered"  # the third application: model_api + samples/mlflow-app, its models from the MLflow registry
THIRD_BARE, THIRD_WORK = STATE / "registered.git", STATE / "registered-src"
THIRD_PORTS = {"staging": 8094, "production": 8095}
REGISTERED_MODEL = "diabetes-regression"
MLFLOW = "http://127.0.0.1:5050"
MODELS = ROOT / "build" / "demo" / "models"
TIMEOUT_S = 600
WEBHOOK_URL = f"{api.DEFAULT_URL}/api/webhooks/github"
SHOWN: dict[str, int] = {}  # history lines already printed, per release


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def git(*args: str, cwd: Path = WORK) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def app_repository(secret_file: Path, webhook_url: str, bare: Path = BARE, work: Path = WORK) -> None:
    """A bare repository whose post-receive hook sends the signed webhook, and its clone."""
    if not (bare / "HEAD").exists():
        git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=STATE)
    shutil.copy(ROOT / "scripts" / "hooks" / "post-receive", bare / "hooks" / "post-receive")
    git("config", "shipbot.webhookUrl", webhook_url, cwd=bare)
    git("config", "shipbot.webhookSecretFile", str(secret_file), cwd=bare)
    if not (work / ".git").exists():
        git("clone", "--quiet", str(bare), str(work), cwd=STATE)
        git("config", "user.name", "Demo Developer", cwd=work)
        git("config", "user.email", "dev@shipbot.local", cwd=work)
        git("checkout", "--quiet", "-B", "main", cwd=work)
    print(f"app repository {bare} (post-receive hook -> {webhook_url})")


def commit_app(trees: list[Path], message: str, *, into_root: bool = False, work: Path = WORK,
               also_root: bool = False) -> str:
    """Makes the work tree hold exactly `trees` (each as a folder of its name, or its files at the root; with
    `also_root`, the first as a folder and the others' files at the root) and commits what changed; the head sha."""
    for path in work.iterdir():
        if path.name != ".git":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for i, tree in enumerate(trees):
        root = into_root or (also_root and i > 0)
        shutil.copytree(tree, work if root else work / tree.name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    git("add", "-A", cwd=work)
    if git("status", "--porcelain", cwd=work):
        git("commit", "--quiet", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def push(work: Path = WORK) -> None:
    done = subprocess.run(["git", "push", "--quiet", "origin", "main"], cwd=work, capture_output=True, text=True)
    print("  " + (done.stderr.strip() or "git push: already up to date").replace("\n", "\n  "))


def train(version: int) -> Path:
    out = MODELS / str(version)
    if not (out / "model.joblib").exists():
        alpha = 1.0 / version  # each version has its own weights, hence its own sha256 and release
        subprocess.run([sys.executable, str(ROOT / "samples/diabetes/train.py"), str(out), "--alpha", str(alpha)],
                       check=True, stdout=subprocess.DEVNULL)
    return out


def upload(service: BlobServiceClient, version: int) -> None:
    container = service.get_container_client("models")
    if not container.exists():
        container.create_container()
    folder = train(version)
    for name in ("sample-request.json", "sample-response.json", "model.joblib"):  # the model file last
        with open(folder / name, "rb") as data:
            container.upload_blob(f"diabetes/{version}/{name}", data, overwrite=True)
    print(f"uploaded models/diabetes/{version}/model.joblib ({(folder / 'model.joblib').stat().st_size} bytes)")


def next_version(service: BlobServiceClient) -> int:
    container = service.get_container_client("models")
    if not container.exists():
        return 1
    versions = [int(b.name.split("/")[1]) for b in container.list_blobs(name_starts_with="diabetes/")
                if b.name.split("/")[1].isdigit()]
    return max(versions, default=0) + 1


def follow(client: api.Client, environment: str, *, model_version: int | None = None, commit: str | None = None,
           quiet: bool = False) -> dict:
    """Prints the ledger history of the release that ships `model_version` (or `commit`) until `environment`
    runs it."""
    deadline, release = time.monotonic() + TIMEOUT_S, None
    wanted = (lambda r: r.get("commit") == commit) if commit else (
        lambda r: (r.get("model") or {}).get("version") == str(model_version))
    while time.monotonic() < deadline:
        if release is None:
            release = next((r for r in client.list_releases(limit=20) if wanted(r)), None)
        else:
            release = client.get_release(release["id"])
        if release:
            for entry in [] if quiet else release["history"][SHOWN.get(release["id"], 0):]:
                print(f"  {entry['at'][11:19]}  {release['id']}  {entry['what']:<24} {entry['detail'][:90]}")
            SHOWN[release["id"]] = len(release["history"])
            if release["status"] in ("failed", "superseded"):
                raise SystemExit(f"release {release['id']} {release['status']}: {release['reason']}")
            env = {e["name"]: e for e in client.list_environments()}[environment]
            if (env.get("current") or {}).get("release_id") == release["id"]:
                return release
        time.sleep(0.5)  # polling the API for the demo's display, not synchronising a test
    raise SystemExit(f"{f'commit {commit[:12]}' if commit else f'model v{model_version}'} did not reach "
                     f"{environment} within {TIMEOUT_S} s")


def score(url: str, sample: Path) -> str:
    """What the environment runs, by its identity route (model_api's /version, the Flask app's /about), and the
    first value its /score gives for the sample."""
    body = sample.read_bytes()
    result = httpx.post(f"{url}/score", content=body, headers={"Content-Type": "application/json"},
                        timeout=5).json()["result"]
    version = httpx.get(f"{url}/version", timeout=5)
    if version.status_code == 200:
        who = f"model_api, model v{version.json()['model_version']}, {version.json()['release_id']}"
    else:
        who = f"flask-app, {httpx.get(f'{url}/about', timeout=5).json()['release_id']}"
    return f"{who}: /score -> [{result[0]:.2f}, ...]"


def connect(app: str | None) -> api.Client:
    return api.Client(api.DEFAULT_URL, key=keys.HostKeys.load(STATE).default_function_key, actor="demo", app=app)


def with_app(client: api.Client, app: dict) -> str:
    """The fleet in force with `app` in it (replacing its namesake), as YAML."""
    doc = yaml.safe_load(client.get_fleet()["text"])
    doc["apps"] = [a for a in doc["apps"] if a["name"] != app["name"]] + [app]
    return yaml.safe_dump(doc, sort_keys=False)


def with_second_app(client: api.Client) -> str:
    """The fleet in force (the app settings' application at first) with the second application in it, as YAML."""
    return with_app(client, {
        "name": SECOND,
        "source": {"repository": str(SECOND_BARE), "branch": "main",
                   "webhook_secret": "setting:SHIPBOT_GITHUB_SECRET"},
        "models": ["diabetes"],
        "image": "shipbot/scoring",
        "environments": [
            {"name": "dev", "target": {"kind": "local", "port": SECOND_PORTS["dev"]}, "rule": "on_green"},
            {"name": "qa", "target": {"kind": "local", "port": SECOND_PORTS["qa"]}, "rule": "on_green",
             "approval": True},
            {"name": "prod", "target": {"kind": "local", "port": SECOND_PORTS["prod"]}, "rule": "manual"}]})


def second_application(first_app: str, sample: Path) -> None:
    say(f"a second application joins the fleet: {SECOND} (samples/mlops-score, an Azure ML score.py repository), "
        "dev -> qa (approval) -> prod")
    client = connect(SECOND)
    fleet_file = STATE / "fleet.yaml"
    fleet_file.write_text(with_second_app(connect(first_app)))
    if cli.main(["apply", "-f", str(fleet_file), "--reason", "demo: a second application"]) != 0:
        raise SystemExit("the fleet file was not applied")
    app_repository(STATE / "secrets" / "github-webhook-secret", WEBHOOK_URL, SECOND_BARE, SECOND_WORK)
    sha = commit_app([ROOT / "samples" / "mlops-score"], "scoring: the score.py repository", into_root=True,
                     work=SECOND_WORK)
    started = time.monotonic()
    push(SECOND_WORK)
    release = follow(client, "dev", commit=sha)
    print(f"dev runs {release['id']} after {time.monotonic() - started:.0f} s (its push reached {SECOND} only)")
    waiting = client.get_release(release["id"])
    if "qa" not in waiting.get("approved", []):
        print(f"qa waits: {release['id']} is not approved for qa")
    say(f"an operator approves {release['id']} for qa, then promotes it to prod")
    if cli.main(["approve", SECOND, "qa", release["id"], "--reason", "demo: QA signed off", "--wait"]) != 0:
        raise SystemExit(f"the approval of {release['id']} for qa did not reach qa")
    if cli.main(["--app", SECOND, "promote", "--to", "prod", "--reason", "demo", "--wait"]) != 0:
        raise SystemExit("the promotion to prod did not reach prod")
    for name, port in SECOND_PORTS.items():
        print(f"{SECOND}/{name:<5} http://127.0.0.1:{port:<6} {score(f'http://127.0.0.1:{port}', sample)}")


def register(alpha: float) -> dict:
    """A data scientist's pipeline: train, log and register a version with the real MLflow library."""
    python = STATE / "mlflow" / "venv" / "bin" / "python"
    done = subprocess.run([str(python), str(ROOT / "samples/diabetes/register.py"), "--uri", MLFLOW,
                           "--name", REGISTERED_MODEL, "--alpha", str(alpha)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"registering a version failed: {done.stderr[-2000:]}")
    version = yaml.safe_load(done.stdout.strip().splitlines()[-1])
    print(f"registered {REGISTERED_MODEL} v{version['version']} (Ridge alpha={alpha}, held-out R^2 {version['r2']})")
    return version


def settled(client: api.Client, version: str) -> dict:
    """The release of the registered version, once its smoke test and gate are done (green or failed)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        release = next((r for r in client.list_releases(limit=20)
                        if (r.get("model") or {}).get("version") == version), None)
        if release and release["status"] in ("green", "failed", "superseded"):
            return release
        time.sleep(0.5)  # polling the API for the demo's display, not synchronising a test
    raise SystemExit(f"{REGISTERED_MODEL} v{version} did not settle within {TIMEOUT_S} s")


def gate_line(release: dict) -> str:
    figures = release.get("evaluation") or {}
    base = figures.get("baseline")
    return (f"{release['id']}: rmse {figures.get('value', float('nan')):.2f}"
            + (f" against production's {base:.2f}" if base is not None else " (nothing in production yet)")
            + f" -> {'passed' if figures.get('passed') else 'STOPPED'}")


def third_application(first_app: str) -> None:
    say(f"a third application takes its models from the MLflow registry, with a quality gate: {THIRD}")
    client = connect(THIRD)
    fleet_file = STATE / "fleet.yaml"
    fleet_file.write_text(with_app(connect(first_app), {
        "name": THIRD,
        "source": {"repository": str(THIRD_BARE), "branch": "main", "webhook_secret": "setting:SHIPBOT_GITHUB_SECRET"},
        "models": [REGISTERED_MODEL],
        "model_source": {"kind": "mlflow"},
        "image": "shipbot/registered",
        "environments": [
            {"name": "staging", "target": {"kind": "local", "port": THIRD_PORTS["staging"]}, "rule": "on_green"},
            {"name": "production", "target": {"kind": "local", "port": THIRD_PORTS["production"]},
             "rule": "manual"}]}))
    if cli.main(["apply", "-f", str(fleet_file), "--reason", "demo: models from the MLflow registry"]) != 0:
        raise SystemExit("the fleet file was not applied")
    app_repository(STATE / "secrets" / "github-webhook-secret", WEBHOOK_URL, THIRD_BARE, THIRD_WORK)
    commit_app([ROOT / "model_api", ROOT / "samples" / "mlflow-app"], "registered: a quality gate ([evaluate])",
               work=THIRD_WORK, also_root=True)
    push(THIRD_WORK)

    say("a data scientist registers a version in MLflow: it goes to staging, then production (the gate's baseline)")
    first = register(1.0)
    release = follow(client, "staging", model_version=int(first["version"]))
    print(gate_line(client.get_release(release["id"])))
    if cli.main(["--app", THIRD, "promote", "--reason", "demo: the gate's baseline", "--wait"]) != 0:
        raise SystemExit("the promotion to production did not reach production")

    say("a better version: it passes the gate and goes to staging")
    better = register(0.1)
    release = follow(client, "staging", model_version=int(better["version"]))
    print(gate_line(client.get_release(release["id"])))

    say("a worse version: the gate stops it; staging keeps the better one")
    worse = register(10.0)
    stopped = settled(client, worse["version"])
    print(gate_line(stopped))
    print(f"  reason: {stopped['reason']}")
    if stopped["status"] != "failed":
        raise SystemExit(f"the worse version was not stopped: {stopped['status']}")
    print(f"  `shipbot --app {THIRD} release {stopped['id']}` shows both figures; "
          f"`shipbot --app {THIRD} override {stopped['id']} --reason ...` would let it go on")


def main() -> int:
    say("shipbot up: Docker engine, registry, Azurite, local functions host and event bridge")
    if cli.main(["up"]) != 0:
        return 1
    first_app = yaml.safe_load(connect(None).get_fleet()["text"])["apps"][0]["name"]  # the app settings' one
    client, service = connect(first_app), BlobServiceClient.from_connection_string(AZURITE)

    say("a developer pushes the app to the release branch (signed GitHub webhook)")
    app_repository(STATE / "secrets" / "github-webhook-secret", WEBHOOK_URL)
    commit_app([ROOT / "model_api"], "app: model_api from the ShipBot repository")
    push()

    first = next_version(service)
    say(f"a data scientist uploads model v{first}: build, smoke test, staging")
    started = time.monotonic()
    upload(service, first)
    release = follow(client, "staging", model_version=first)
    print(f"staging runs {release['id']} after {time.monotonic() - started:.0f} s")

    say("promotion to production (the nightly timer's job, asked for by hand)")
    job = client.promote(reason="demo")
    print(f"promote {job['release_id']}: queued")
    follow(client, "production", model_version=first)

    say(f"model v{first + 1}: staging moves, production stays")
    upload(service, first + 1)
    follow(client, "staging", model_version=first + 1)

    say("the developer ships an app that is not model_api: samples/flask-app, its own Dockerfile and routes")
    sha = commit_app([ROOT / "samples" / "flask-app"], "app: the Flask sample (own Dockerfile, shipbot.toml)",
                     into_root=True)
    started = time.monotonic()
    push()
    release = follow(client, "staging", commit=sha)
    print(f"staging runs the Flask app, {release['id']}, after {time.monotonic() - started:.0f} s "
          "(on a fresh machine its first build also installs Flask and gunicorn from PyPI); production keeps "
          "model_api")

    sample = train(first) / "sample-request.json"
    second_application(first_app, sample)
    third_application(first_app)

    say("status of the applications")
    cli.main(["status"])
    envs = {e["name"]: e for e in client.list_environments()}
    for name in ("staging", "production"):
        print(f"{first_app}/{name:<11} {envs[name]['url']:<24} {score(envs[name]['url'], sample)}")
    print(f"\nAPI {api.DEFAULT_URL}/api (key in {STATE}/host-keys.json); registry http://127.0.0.1:5000; "
          "Azurite 127.0.0.1:10000-10002.\nThe stack keeps running: `.venv/bin/shipbot status`, "
          "`.venv/bin/shipbot down` to stop it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
