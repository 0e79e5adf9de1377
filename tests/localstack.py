"""Release images for the tests of the local adapters, built once per test session on the real local stack
(Docker engine and registry) and shared by tests/contract and tests/integration.

Built through the real path, DockerBuilder and shared.buildcontext, from this tree and the sample model:
    good            the sample model; scores to its sample-response.json
    bad-model       a model.joblib that is not a model: model_api never becomes ready
    wrong-response  a sample-response.json whose result[3] is off by one: the smoke test's score check fails
A missing stack fails the test (as tests/integration/conftest.py does): `make test` starts it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import docker
import httpx
import pytest

from shared.adapters.local.docker_builder import BuildRequest, DockerBuilder

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = "127.0.0.1:5000"  # scripts/local-stack.sh's default
REPOSITORY = "shipbot-test/adapters"
SESSION = uuid.uuid4().hex[:8]
_workdir = tempfile.TemporaryDirectory(prefix="shipbot-test-images-")  # removed when the session ends


@dataclasses.dataclass(frozen=True)
class SampleImage:
    kind: str
    repository: str  # with the registry host
    tag: str
    digest: str
    release_id: str
    commit: str
    model_sha256: str

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}"


@functools.cache
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        pytest.fail(f"no Docker engine answers ({e}); start the stack with `make stack`")
    try:
        httpx.get(f"http://{REGISTRY}/v2/", timeout=2).raise_for_status()
    except httpx.HTTPError as e:
        pytest.fail(f"no registry on {REGISTRY} ({e}); start the stack with `make stack`")
    return client


@functools.cache
def sample_model() -> Path:
    """The sample model folder (samples/diabetes/train.py): model.joblib and its sample request/response."""
    out = Path(_workdir.name, "model-good")
    subprocess.run([sys.executable, str(ROOT / "samples/diabetes/train.py"), str(out)], check=True,
                   capture_output=True)
    return out


def model_folder(kind: str) -> Path:
    good = sample_model()
    if kind == "good":
        return good
    out = Path(_workdir.name, f"model-{kind}")
    shutil.copytree(good, out, dirs_exist_ok=True)
    if kind == "bad-model":
        (out / "model.joblib").write_bytes(b"this is not a model\n")
    elif kind == "wrong-response":
        response = json.loads((out / "sample-response.json").read_text())
        response["result"][3] += 1.0
        (out / "sample-response.json").write_text(json.dumps(response))
    else:
        raise ValueError(kind)
    return out


@functools.cache
def release_image(kind: str = "good") -> SampleImage:
    release_id, commit = f"r-test-{kind}-{SESSION}", uuid.uuid4().hex + uuid.uuid4().hex[:8]
    built = DockerBuilder(client=docker_client()).build(BuildRequest(
        source=ROOT, model_dir=model_folder(kind), repository=f"{REGISTRY}/{REPOSITORY}", tag=f"{kind}-{SESSION}",
        model_name="diabetes", model_version=kind, git_commit=commit, source_url="file:///shipbot",
        release_id=release_id))
    return SampleImage(kind=kind, repository=built.repository, tag=built.tag, digest=built.digest,
                     release_id=release_id, commit=commit, model_sha256=built.model_sha256)


# -- inputs for the asynchronous builder: a real git repository and a models folder -----------------------
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.test", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


def app_repository(root: Path, *, dockerfile: str | None = None) -> tuple[Path, str]:
    """A git repository holding this tree's model_api/ (its Dockerfile replaced when given); its head sha."""
    repo = root / "app"
    shutil.copytree(ROOT / "model_api", repo / "model_api",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
    if dockerfile is not None:
        (repo / "model_api" / "Dockerfile").write_text(dockerfile)
    return repo, commit_tree(repo)


def commit_tree(repo: Path, message: str = "app") -> str:
    """Commits everything under `repo` (a git repository made on first use, branch main); the new head sha."""
    if not (repo / ".git").exists():
        subprocess.run(["git", "-C", str(repo), "init", "-q", "-b", "main"], check=True, capture_output=True,
                       env=GIT_ENV)
    for args in (["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=GIT_ENV)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout.strip()


class FolderModels:
    """The Models port over model folders on disk: enough to feed a real build (tests only)."""

    def __init__(self, folders: dict[tuple[str, str], Path]) -> None:
        self.folders = folders

    def download(self, model, destination: Path) -> None:
        for path in self.folders[(model.name, model.version)].iterdir():
            shutil.copyfile(path, destination / path.name)
