"""Fixtures for model_api's in-process unit tests.

Each test drives a real model_api.app.App through httpx's ASGI transport, on an event loop that runs on the
main thread (so the SIGALRM scoring deadline works), with the access log going to a temp file. ASGITransport
sends no lifespan events, so the fixture starts the app itself (App.start), as the server's startup would.
"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import shutil
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_api import telemetry
from model_api.app import App
from model_api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "samples" / "diabetes" / "train.py"
N_FEATURES = 10
LOAD_TIMEOUT_S = 30.0

# A custom Azure ML entry script that takes request_headers; what run() does depends on the body.
CUSTOM_SCRIPT = '''
import json
import time

from model_api.errors import InvalidInput


def init():
    pass


def run(raw_data, request_headers):
    if raw_data == "raise":
        raise RuntimeError("run() blew up")
    if raw_data == "value-error":
        raise ValueError("a bug that is not about JSON")
    if raw_data == "invalid":
        raise InvalidInput("the script refuses this input")
    if raw_data == "not-json-result":
        return {"result": object()}
    if raw_data == "tuple-result":
        return ("a", 2)
    if raw_data == "spin":  # pure Python, so SIGALRM can interrupt it; gives up after 10 s rather than hang
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pass
        return {"result": "never interrupted"}
    body = json.loads(raw_data)
    if isinstance(body, dict) and "data" in body:
        return {"result": [sum(row) for row in body["data"]]}
    return {"echo": body, "headers": request_headers}
'''

# An entry script whose init() waits for the test (see the gate fixture), or fails when the test says so.
GATED_SCRIPT = '''
import model_api_test_gate as gate


def init():
    gate.entered.set()
    if not gate.release.wait(30):
        raise TimeoutError("the test never released init()")
    if gate.fail is not None:
        raise gate.fail


def run(raw_data):
    return {"result": raw_data}
'''


# -- hygiene: model_api touches process-wide state; put it back after every test -------------------------------
@pytest.fixture(autouse=True)
def _process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)  # Model.load sets it (the Azure ML contract)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # /metrics must read this process's registry
    monkeypatch.delitem(sys.modules, "score", raising=False)  # EntryScript registers the script as `score`
    handler = signal.getsignal(signal.SIGALRM)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, handler)


# -- models ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def diabetes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample model folder, trained by samples/diabetes/train.py: model.joblib and the sample request/response."""
    out = tmp_path_factory.mktemp("diabetes")
    argv = sys.argv
    sys.argv = [str(TRAIN), str(out)]
    try:
        runpy.run_path(str(TRAIN), run_name="__main__")
    finally:
        sys.argv = argv
    return out


@pytest.fixture(scope="session")
def ridge(diabetes_dir: Path) -> Any:
    return joblib.load(diabetes_dir / "model.joblib")


@pytest.fixture(scope="session")
def sample_rows(diabetes_dir: Path) -> np.ndarray:
    return np.asarray(json.loads((diabetes_dir / "sample-request.json").read_text())["data"])


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory, diabetes_dir: Path, ridge: Any) -> Path:
    """The same Ridge as an ONNX graph, y = X @ W + b, FP32 input [None, 10]."""
    from onnx import TensorProto, checker, helper, numpy_helper

    weights = ridge.coef_.astype(np.float32).reshape(N_FEATURES, 1)
    bias = np.asarray([ridge.intercept_], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])],
        "ridge",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, N_FEATURES])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what any recent onnxruntime reads
    checker.check_model(model)
    out = tmp_path_factory.mktemp("onnx")
    (out / "model.onnx").write_bytes(model.SerializeToString())
    shutil.copy(diabetes_dir / "sample-request.json", out)
    return out


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str, str], Path]:
    """write(name, source) -> the path of an entry script in this test's temp folder."""
    folder = tmp_path / "scripts"
    folder.mkdir()

    def write(name: str, source: str) -> Path:
        path = folder / name
        path.write_text(source)
        return path

    return write


@pytest.fixture
def custom_script(script: Callable[[str, str], Path]) -> Path:
    return script("custom_score.py", CUSTOM_SCRIPT)


@pytest.fixture
def gated_script(script: Callable[[str, str], Path]) -> Path:
    return script("gated_score.py", GATED_SCRIPT)


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    return folder


# -- the service ----------------------------------------------------------------------------------------------
class Service:
    """One App on its own event loop, driven through httpx.ASGITransport; sync calls for sync tests."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self._runner = asyncio.Runner()
        self._fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.app = App(settings, access_log=telemetry.AccessLog(self._fd))
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://model-api")
        self.loader: asyncio.Future[None] | None = None

    def start(self) -> Service:
        async def start() -> asyncio.Future[None]:
            return self.app.start()  # on this (the main) thread: installs the SIGALRM deadline

        self.loader = self._runner.run(start())
        return self

    def wait_loaded(self) -> Service:
        assert self.loader is not None
        loader = self.loader

        async def wait() -> None:
            await asyncio.wait_for(asyncio.shield(loader), LOAD_TIMEOUT_S)

        self._runner.run(wait())
        return self

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._runner.run(self.client.request(method, path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def post_many(self, path: str, bodies: list[bytes]) -> list[httpx.Response]:
        """The bodies POSTed at the same moment: all are waiting on the loop before any is scored."""
        async def post_all() -> list[httpx.Response]:
            return await asyncio.gather(*(self.client.post(path, content=body) for body in bodies))

        return self._runner.run(post_all())

    def access_log(self) -> list[dict[str, Any]]:
        """The access log so far, one JSON object a line."""
        return [json.loads(line) for line in self.log_path.read_bytes().splitlines()]

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """GET /metrics, parsed: (sample name, labels) -> value."""
        response = self.get("/metrics")
        assert response.status_code == 200
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(response.text) for s in family.samples}

    def close(self) -> None:
        try:
            self._runner.run(self.client.aclose())
        finally:
            self._runner.close()  # joins the loader thread
            os.close(self._fd)


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def serve(tmp_path: Path, diabetes_dir: Path) -> Iterator[Callable[..., Service]]:
    """serve(model_dir=..., entry_script=..., wait=True, **settings) -> a started Service.

    Defaults: the sample diabetes model, the default entry script, no access log on stdout.
    """
    services: list[Service] = []

    def start(*, wait: bool = True, settings: Settings | None = None, **fields: Any) -> Service:
        if settings is None:
            fields.setdefault("model_dir", diabetes_dir)
            settings = Settings(**fields)
        service = Service(settings, tmp_path / f"access-{len(services)}.log")
        services.append(service)
        service.start()
        return service.wait_loaded() if wait else service

    yield start
    for service in services:
        service.close()


@pytest.fixture
def gate(serve: Callable[..., Service], monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """What GATED_SCRIPT's init() waits on: .entered (set by init), .release (set by the test), .fail.

    Depends on `serve`, so it is torn down first: init() is always released before the service closes.
    """
    module = types.ModuleType("model_api_test_gate")
    module.entered, module.release, module.fail = threading.Event(), threading.Event(), None
    monkeypatch.setitem(sys.modules, "model_api_test_gate", module)
    yield module
    module.release.set()


@pytest.fixture
def assert_error() -> Callable[[httpx.Response, int, str], str]:
    """assert_error(response, status, code) -> message: the error contract, {"error": {"code", "message"}}."""

    def check(response: httpx.Response, status: int, code: str) -> str:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = orjson.loads(response.content)
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message"}
        assert body["error"]["code"] == code
        message = body["error"]["message"]
        assert isinstance(message, str) and message
        return message

    return check


@pytest.fixture
def metric_value() -> Callable[..., float]:
    """metric_value(samples, name, **labels) -> the sample's value, 0 when absent."""
    return metric
