"""Fixtures on the real local stack: the Docker engine and the distribution registry (`make test` starts
them with scripts/local-stack.sh). A missing stack is an error, not a skip: `make test` runs everything."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import docker
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "127.0.0.1:5000"  # scripts/local-stack.sh's default


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def train_model(tmp_path_factory: pytest.TempPathFactory):
    """train_model(alpha) -> a model folder made by samples/diabetes/train.py."""

    def train(alpha: float = 1.0) -> Path:
        out = tmp_path_factory.mktemp(f"model-alpha{alpha}")
        subprocess.run([sys.executable, str(ROOT / "samples/diabetes/train.py"), str(out), "--alpha", str(alpha)],
                       check=True, capture_output=True)
        return out

    return train


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- figures the fault tests measure (tests never assert timings; they print them here) -------------------------
CONVERGED: list[tuple[str, float]] = []


@pytest.fixture
def converged():
    """converged(case, seconds): records how long a fault case took to converge, for the run's summary."""
    return lambda case, seconds: CONVERGED.append((case, seconds))


def pytest_terminal_summary(terminalreporter) -> None:
    if CONVERGED:
        terminalreporter.section("faults: time from the fault's end to a converged release")
        for case, seconds in CONVERGED:
            terminalreporter.write_line(f"{seconds:7.1f} s  {case}")
