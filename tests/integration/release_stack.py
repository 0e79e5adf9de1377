"""ShipBot end to end on the real local stack, for tests/integration/test_release_*.py.

`Bot` starts the real local host (`python -m stack.host`, the real function_app with its event bridge) on
127.0.0.1:7071, where the registry sends its push notifications, with everything else of its own: a ledger
container, a models container, a registry repository, a git repository with the post-receive hook, a jobs
queue, environment containers and ports. The shared daemons (Docker engine, registry, Azurite) stay up; a
host already running on 7071 (`shipbot up`, `make demo`) is stopped for the tests and started again after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from shared.settings import AZURITE
from stack import keys, lifecycle, testing

ROOT = Path(__file__).resolve().parents[2]
PORT = 7071  # the registry's notifications go to the bridge on this port
URL = f"http://127.0.0.1:{PORT}"
REGISTRY = "127.0.0.1:5000"
DEADLINE_S = 300.0


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Bot:
    """One isolated ShipBot on the shared stack."""

    root: Path
    name: str = field(default_factory=lambda: "e2e" + uuid.uuid4().hex[:8])
    process: subprocess.Popen | None = None
    bridge: bool = True  # False: no blob watcher and no registry notifications, as if Event Grid lost them
    reconcile_schedule: str = "0 0 0 1 1 *"  # by hand (bot.fire) unless a test wants the timer
    app: Path | None = None  # the application's tree (e.g. samples/flask-app); None: a copy of model_api
    ports: dict[str, int] = field(default_factory=lambda: {"staging": free_port(), "production": free_port()})
    env: dict[str, str] = field(default_factory=dict)  # more app settings (e.g. SHIPBOT_MODEL_SOURCE)

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def bare(self) -> Path:
        return self.root / "app.git"

    @property
    def work(self) -> Path:
        return self.root / "app-src"

    @property
    def repository(self) -> str:
        return f"shipbot-{self.name}/app"

    @property
    def foreign_repository(self) -> str:
        return f"shipbot-{self.name}/other"

    @property
    def secret(self) -> str:
        return "github-secret-" + self.name

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "SHIPBOT_STATE": str(self.state), "SHIPBOT_STORAGE": AZURITE,
            "SHIPBOT_LEDGER_CONTAINER": f"ledger-{self.name}", "SHIPBOT_MODELS_CONTAINER": f"models-{self.name}",
            "SHIPBOT_JOBS_QUEUE": f"jobs-{self.name}", "SHIPBOT_GIT_REPO": str(self.bare),
            "SHIPBOT_REPOSITORY": self.repository, "SHIPBOT_ALLOWED_REPOSITORIES": self.foreign_repository,
            "SHIPBOT_ENVIRONMENT_PREFIX": f"shipbot-{self.name}", "SHIPBOT_GITHUB_SECRET": self.secret,
            "SHIPBOT_AZURE_DEVOPS_SECRET": self.secret,
            "SHIPBOT_STAGING_PORT": str(self.ports["staging"]), "SHIPBOT_PRODUCTION_PORT": str(self.ports["production"]),
            "SHIPBOT_REGISTRY_NOTIFY_SECRET": keys.shared_secret(Path(os.environ.get("SHIPBOT_STATE", "/var/lib/shipbot"))
                                                                 / "registry-notify.secret"),
            "SHIPBOT_RECONCILE_SCHEDULE": self.reconcile_schedule, "SHIPBOT_PROMOTION_SCHEDULE": "0 0 0 1 1 *",
            "PYTHONPATH": str(ROOT),
        })
        env.update(self.env)
        return env

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> Bot:
        self.state.mkdir(parents=True, exist_ok=True)
        self.blobs.get_container_client(f"models-{self.name}").create_container()
        self._app_repository()
        return self._spawn()

    def kill(self) -> None:
        """SIGKILL to the host's process group: a crash, nothing shut down gracefully."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def restart(self) -> Bot:
        """Starts the host again on the same state, ledger, queue and environments (after `kill`)."""
        return self._spawn()

    def _spawn(self) -> Bot:
        log = open(self.state / "host.log", "ab")
        args = [sys.executable, "-m", "stack.host", "--port", str(PORT)] + ([] if self.bridge else ["--no-bridge"])
        self.process = subprocess.Popen(args, cwd=ROOT,
                                        env=self.environ(), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.wait(lambda: self._answers(), what="the host answers")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        client = docker.from_env()
        for container in client.containers.list(all=True, filters={"name": f"shipbot-{self.name}"}):
            container.remove(force=True)
        for name in (f"ledger-{self.name}", f"models-{self.name}"):
            self.blobs.delete_container(name)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("the host exited:\n" + self.host_log()[-3000:])
        try:
            return httpx.get(f"{URL}/admin/host/status", headers={"x-functions-key": self.keys.master},
                             timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def ledger_doc(self, name: str) -> dict | None:
        """A ledger document as stored (e.g. environments/staging.json), None when absent."""
        blob = self.blobs.get_blob_client(f"ledger-{self.name}", name)
        try:
            return json.loads(blob.download_blob().readall())
        except ResourceNotFoundError:
            return None

    def host_log(self) -> str:
        return (self.state / "host.log").read_text(errors="replace")

    @property
    def keys(self) -> keys.HostKeys:
        return keys.HostKeys.load(self.state)

    @property
    def blobs(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(AZURITE)

    # -- inputs -----------------------------------------------------------------------------------------------
    def _app_repository(self) -> None:
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare), cwd=self.root)
        shutil.copy(ROOT / "scripts" / "hooks" / "post-receive", self.bare / "hooks" / "post-receive")
        (self.root / "webhook-secret").write_text(self.secret)
        git("config", "shipbot.webhookUrl", f"{URL}/api/webhooks/github", cwd=self.bare)
        git("config", "shipbot.webhookSecretFile", str(self.root / "webhook-secret"), cwd=self.bare)
        git("clone", "--quiet", str(self.bare), str(self.work), cwd=self.root)
        for key, value in (("user.name", "Test Developer"), ("user.email", "dev@test"), ("init.defaultBranch", "main")):
            git("config", key, value, cwd=self.work)
        git("checkout", "--quiet", "-B", "main", cwd=self.work)
        if self.app is not None:
            shutil.copytree(self.app, self.work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copytree(ROOT / "model_api", self.work / "model_api", ignore=shutil.ignore_patterns("__pycache__"))

    def commit_and_push(self, message: str, *, change: str | None = None) -> tuple[str, str]:
        """Commits the app (with `change` written to CHANGES) and pushes; returns (sha, the hook's output)."""
        if change is not None:
            (self.work / "CHANGES").write_text(change)
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        push = subprocess.run(["git", "push", "--quiet", "origin", "main"], cwd=self.work, capture_output=True,
                              text=True, check=True)
        return git("rev-parse", "HEAD", cwd=self.work), push.stderr

    def upload_model(self, model_dir: Path, version: str, *, name: str = "diabetes") -> None:
        container = self.blobs.get_container_client(f"models-{self.name}")
        for file in ("sample-request.json", "sample-response.json", "model.joblib"):  # the model file last
            with open(model_dir / file, "rb") as data:
                container.upload_blob(f"{name}/{version}/{file}", data, overwrite=True)

    # -- the API ----------------------------------------------------------------------------------------------
    def api(self, method: str, path: str, *, key: str | None = "default", **kwargs: Any) -> httpx.Response:
        headers = {"x-shipbot-actor": "tester", **kwargs.pop("headers", {})}
        if key == "default":
            headers["x-functions-key"] = self.keys.default_function_key
        elif key is not None:
            headers["x-functions-key"] = key
        return httpx.request(method, f"{URL}{path}", headers=headers, timeout=30, **kwargs)

    def fire(self, function: str) -> None:
        response = httpx.post(f"{URL}/admin/functions/{function}", json={"input": ""},
                              headers={"x-functions-key": self.keys.master}, timeout=10)
        assert response.status_code == 202, response.text

    def releases(self) -> list[dict]:
        return self.api("GET", "/api/releases").json()["releases"]

    def release(self, release_id: str) -> dict:
        return self.api("GET", f"/api/releases/{release_id}").json()

    def environments(self) -> dict[str, dict]:
        return {e["name"]: e for e in self.api("GET", "/api/environments").json()["environments"]}

    def version(self, environment: str) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.ports[environment]}/version", timeout=5).json()

    # -- waiting ----------------------------------------------------------------------------------------------
    def wait(self, check, *, what: str, timeout: float = DEADLINE_S):
        """Polls `check` until it returns something truthy; the deadline only bounds a failure."""
        try:
            return testing.eventually(check, timeout=timeout, interval=0.1, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}; host log tail:\n{self.host_log()[-4000:]}") from None

    def wait_release(self, predicate, *, what: str) -> dict:
        return self.wait(lambda: next((r for r in self.releases() if predicate(r)), None), what=what)

    def wait_settled(self, release_id: str) -> dict:
        """Until the release is no longer in flight (green, failed or superseded)."""
        return self.wait(lambda: (r := self.release(release_id))["status"] in ("green", "failed", "superseded")
                         and r, what=f"{release_id} settles")

    def wait_running(self, environment: str, release_id: str) -> dict:
        def runs():
            env = self.environments()[environment]
            return (env.get("current") or {}).get("release_id") == release_id and env
        env = self.wait(runs, what=f"{environment} runs {release_id}")
        if release_id.startswith("r-"):  # a foreign image (i-...) reports the release id its pipeline gave it
            assert self.version(environment)["release_id"] == release_id
        return env


def previous_host() -> lifecycle.Stack | None:
    """A host already on 7071 (shipbot up), stopped for the tests; returned, with the checkout and the Python
    it ran from, so that it can be started again as it was."""
    stack = lifecycle.Stack(state=Path(os.environ.get("SHIPBOT_STATE", "/var/lib/shipbot")), port=PORT,
                            environ=dict(os.environ))
    pid = lifecycle.host_pid(stack)
    if pid is None:
        return None
    root = Path(os.readlink(f"/proc/{pid}/cwd"))
    python = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    lifecycle.stop_host(stack)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    return dataclasses.replace(stack, root=root, python=python, environ=environ)

