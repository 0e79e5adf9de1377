"""The model behind the endpoints: an Azure ML entry script, loaded once per worker process.

Loading (import, init(), one warm-up run) happens off the event loop, so liveness answers at once and
readiness turns true only when a real inference has passed. Scoring runs on the worker's main thread under
a SIGALRM deadline, as Azure ML's own server does: an overrunning run() is interrupted, not abandoned on a
thread that keeps burning the core.
"""

from __future__ import annotations

import importlib.util
import json
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model_api import errors
from model_api.settings import Settings

log = logging.getLogger("model_api")

LOADING, READY, FAILED = "loading", "ready", "failed"


class EntryScript:
    """A score.py with init() and run(raw_data) or run(raw_data, request_headers), plus optional extensions."""

    def __init__(self, path: Path) -> None:
        spec = importlib.util.spec_from_file_location("score", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load an entry script from {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["score"] = module
        spec.loader.exec_module(module)
        for name in ("init", "run"):
            if not callable(getattr(module, name, None)):
                raise AttributeError(f"entry script {path} has no {name}() function")
        self.init: Callable[[], None] = module.init
        self._run: Callable[..., Any] = module.run
        params = inspect.signature(module.run).parameters
        self.wants_headers = "request_headers" in params
        if len(params) - self.wants_headers < 1:
            raise TypeError("run() needs a parameter for the input data")
        self.run_batch: Callable[[list[str]], list[Any]] | None = getattr(module, "run_batch", None)
        self.predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = getattr(module, "predict", None)
        self.metadata: Callable[[], dict[str, Any]] | None = getattr(module, "metadata", None)
        self.sample_request: Callable[[], str | None] | None = getattr(module, "sample_request", None)

    def run(self, raw_data: str, headers: Callable[[], dict[str, str]]) -> Any:
        if self.wants_headers:
            return self._run(raw_data, request_headers=headers())
        return self._run(raw_data)


class Model:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = LOADING
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.script: EntryScript | None = None
        self.batches = False  # a script with run_batch() is ready: /score requests may be scored together
        self._armed = False
        self._use_alarm = False

    # -- lifecycle ------------------------------------------------------------------------------------------
    def install_deadline(self) -> None:
        """Call on the thread that will score. SIGALRM can only interrupt a process's main thread."""
        self._use_alarm = threading.current_thread() is threading.main_thread()
        if self._use_alarm:
            signal.signal(signal.SIGALRM, self._on_alarm)
        else:
            log.warning("not on the main thread: scoring timeout cannot be enforced")

    def load(self) -> None:
        """Import the entry script, init(), then one warm-up run. Never raises: a failure is a state."""
        started = time.perf_counter()
        try:
            os.environ["AZUREML_MODEL_DIR"] = str(self.settings.model_dir)
            script = EntryScript(self.settings.entry_script)
            script.init()
            self.load_seconds = time.perf_counter() - started
            sample = self._warmup_request(script)
            if sample is None:
                log.warning("no sample-request.json and no sample_request(): ready without a warm-up run")
            else:
                dumps(script.run(sample, dict))
                if script.run_batch is not None:
                    self._warm_batch(script, sample)
            self.script, self.batches, self.state = script, script.run_batch is not None, READY
            log.info("model ready", extra={"load_seconds": round(self.load_seconds, 3),
                                           "warmup": sample is not None})
        except BaseException as e:  # noqa: BLE001 - whatever init() raises, the server stays up and says why
            self.error = f"{type(e).__name__}: {e}"
            self.state = FAILED
            log.exception("model failed to load")

    @staticmethod
    def _warm_batch(script: EntryScript, sample: str) -> None:
        """A run_batch() that cannot score two copies of the warm-up request keeps the model from ready."""
        results = script.run_batch([sample, sample])
        if len(results) != 2:
            raise TypeError(f"run_batch() returned {len(results)} results for 2 requests")
        for result in results:
            if isinstance(result, BaseException):
                raise result
            dumps(result)

    def _warmup_request(self, script: EntryScript) -> str | None:
        sample = self.settings.model_dir / "sample-request.json"
        if sample.is_file():
            return sample.read_text("utf-8")
        return script.sample_request() if script.sample_request else None

    def ready_script(self) -> EntryScript:
        if self.state != READY or self.script is None:
            detail = f": {self.error}" if self.error else ""
            raise errors.ModelNotReady(f"model is {self.state}{detail}")
        return self.script

    # -- scoring --------------------------------------------------------------------------------------------
    def score(self, raw_data: str, headers: Callable[[], dict[str, str]]) -> Any:
        script = self.ready_script()
        return self._guarded(script.run, raw_data, headers)

    def score_batch(self, raw_batch: list[str]) -> list[Any]:
        """Several /score bodies through the script's run_batch(): one result or errors.ApiError each."""
        script = self.ready_script()
        results = self._guarded(script.run_batch, raw_batch)
        if not isinstance(results, list | tuple) or len(results) != len(raw_batch):
            log.error("run_batch() must return one result per request", extra={"requests": len(raw_batch)})
            raise errors.ScoringFailed("the entry script failed to score this request; see the server log")
        return [self._api_error(r) if isinstance(r, Exception) else r for r in results]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        script = self.ready_script()
        if script.predict is not None:
            return self._guarded(script.predict, inputs)
        # A plain Azure ML script: hand it the one tensor as {"data": rows} and read back its result.
        if len(inputs) != 1:
            raise errors.InvalidInput("this model takes exactly one input tensor")
        (x,) = inputs.values()
        raw = orjson.dumps({"data": x}, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        result = self._guarded(script.run, raw, dict)
        if isinstance(result, dict) and "result" in result:
            result = result["result"]
        return {"output-0": np.asarray(result)}

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._use_alarm:
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, self.settings.scoring_timeout_s)
        try:
            return fn(*args)
        except errors.ApiError:
            raise
        except Exception as e:
            error = self._api_error(e)
            raise error from (None if isinstance(error, errors.BadRequest) else e)
        finally:
            if self._use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                self._armed = False

    @staticmethod
    def _api_error(e: Exception) -> errors.ApiError:
        """What the caller is told when the entry script raised e for its request."""
        if isinstance(e, errors.ApiError):
            return e
        if isinstance(e, json.JSONDecodeError):  # orjson's error is one too
            return errors.BadRequest(f"body is not valid JSON: {e}")
        log.error("run() raised", exc_info=e)
        return errors.ScoringFailed("the entry script failed to score this request; see the server log")

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._armed:
            self._armed = False
            raise errors.ScoringTimeout(f"scoring took longer than {self.settings.scoring_timeout_s:g} s")


def dumps(result: Any) -> bytes:
    """A result as JSON: numpy arrays natively; those orjson cannot take (text labels, mixed objects, as a
    classifier or a python_function model answers) as lists of plain values."""
    return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
