"""Fixtures for the port contract suites: Azurite for the blob adapters, one fresh container per test; the
MLflow server for the registry adapter.

Azurite and MLflow are started with `bash scripts/local-stack.sh azurite|mlflow` when they do not answer (the
script returns at once when they do); if one still does not answer, the test fails: `make test` runs everything.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.storage.blob import ContainerClient

from shared import settings
from shared.adapters import blob_storage

ROOT = Path(__file__).resolve().parents[2]
AZURITE_BLOB = "http://127.0.0.1:10000/devstoreaccount1"


def _azurite_answers() -> bool:
    try:
        httpx.get(f"{AZURITE_BLOB}?comp=list", timeout=2)  # any HTTP answer (403 without a signature) will do
    except httpx.HTTPError:
        return False
    return True


@pytest.fixture(scope="session")
def azurite() -> str:
    """Azurite's connection string, once it answers."""
    if not _azurite_answers():
        run = subprocess.run(["bash", str(ROOT / "scripts/local-stack.sh"), "azurite"], check=False,
                             capture_output=True, text=True, timeout=300)
        if run.returncode != 0 or not _azurite_answers():
            pytest.fail(f"Azurite does not answer on {AZURITE_BLOB}; local-stack.sh said:\n{run.stderr[-2000:]}")
    return settings.AZURITE


@pytest.fixture
def blob_container(azurite: str) -> Iterator[ContainerClient]:
    """A container name no other test uses; not created (the adapters make it when they need it)."""
    # As the app makes its clients (blob_storage: the emulator's retry policy included).
    container = blob_storage.container_from_connection_string(azurite, f"test-{uuid.uuid4().hex}")
    yield container
    if container.exists():
        container.delete_container()


MLFLOW = "http://127.0.0.1:5050"  # scripts/local-stack.sh's default


def _mlflow_answers() -> bool:
    try:
        return httpx.get(f"{MLFLOW}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def mlflow_uri() -> str:
    """The local stack's MLflow tracking server and model registry, once it answers."""
    if not _mlflow_answers():
        run = subprocess.run(["bash", str(ROOT / "scripts/local-stack.sh"), "mlflow"], check=False,
                             capture_output=True, text=True, timeout=900)
        if run.returncode != 0 or not _mlflow_answers():
            pytest.fail(f"MLflow does not answer on {MLFLOW}; local-stack.sh said:\n{run.stderr[-2000:]}")
    return MLFLOW


@pytest.fixture(scope="session")
def mlflow_python(mlflow_uri: str) -> str:
    """The Python of the stack's MLflow venv: a data scientist's side, with mlflow and scikit-learn."""
    return str(Path(os.environ.get("SHIPBOT_STATE", "/var/lib/shipbot")) / "mlflow" / "venv" / "bin" / "python")
