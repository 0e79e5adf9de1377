"""AcrTaskSmokeRunner: smoke-tests a release image in an ACR Task run (ports.SmokeRunner), where DockerSmokeRunner
uses a throwaway container on the local engine.

One run per test, scheduled as an EncodedTaskRunRequest (a multi-step task, its YAML base64-encoded):

    version: v1.1.0
    stepTimeout: <budget + 120>
    steps:
      - id: app                          # the image by digest, detached; on the run's network as "app"
        cmd: "<ref>"
        detach: true
        env: ["MODEL_API_WORKERS=1"]
      - id: check                        # python runs acr_smoke_check.py against it
        cmd: "<check image> python -c \"import base64,sys;exec(base64.b64decode(sys.argv[1]))\" <script> <config>"
        timeout: <budget + 60>

What is checked is the image's smoke contract (shared.contract), read from its label through `registry`
before the run: the check waits for the readiness path on the contract's port, checks the identity route
against the Expectation, POSTs the sample request and checks the answer, all within `budget_seconds`. The
check step runs in ShipBot's `check_image` (any image with Python 3: the release image needs none); an image
without the label is model_api, whose own Python runs the check against the sample files in its model folder
(<check image> is then the release image). It prints one line
`SHIPBOT-SMOKE {"passed": ..., "reason": ..., "steps": ...}` (its exit code fails the run when it did not
pass). With an evaluation set (the quality gate), the set is uploaded as the run's source (a tar.gz of one JSON
file, in /workspace for the steps), the check scores it batch by batch after the smoke test and prints each
batch's answers as a `SHIPBOT-PREDICTIONS {"start", "predictions"}` line; the runner reads the whole log and
joins them in row order. Script and config travel as base64 arguments, so no quoting can break them, and the marker is never in
the task's own text.

The runner polls the run (every `poll_seconds`, until `run_timeout_seconds`, with injectable clock and sleep),
then reads the tail of the run's log through its log SAS link and takes the verdict from the run's status and
the last verdict line. A run that fails without a verdict is red with the log's last lines as its reason; one
that pulled no image is NotFound, as DockerSmokeRunner's is; one that ACR never started in time is a
TransientError (not the image's fault); one still running at the deadline is cancelled and red.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError

from shared import contract, errors, ports
from shared.adapters.azure import acr_runs

CHECK_SCRIPT = Path(__file__).with_name("acr_smoke_check.py")
MARKER = "SHIPBOT-SMOKE"
PREDICTIONS = "SHIPBOT-PREDICTIONS"
EVALUATION_FILE = "shipbot-evaluation.json"
WORKSPACE = "/workspace"  # where a run's steps find its source (the agent's home volume), by absolute path
EVALUATION_LOG_BYTES = 64 << 20  # the log of a run that evaluated: every prediction is in it
_PREDICTIONS = re.compile(rf"{PREDICTIONS} (\{{.*\}})\s*$")
MODEL_DIR = "/var/azureml-app/model"
_VERDICT = re.compile(rf"{MARKER} (\{{.*\}})\s*$")
_NO_IMAGE = re.compile(r"manifest unknown|manifest for \S+ not found|not found: manifest|pull access denied"
                       r"|repository does not exist", re.IGNORECASE)
log = logging.getLogger(__name__)


class AcrTaskSmokeRunner:
    def __init__(self, *, client: Any, resource_group: str, registry_name: str, budget_seconds: float = 180.0,
                 run_timeout_seconds: float = 420.0, poll_seconds: float = 5.0, cpu: int = 2,
                 environment: dict[str, str] | None = None, blob_options: dict[str, Any] | None = None,
                 registry: ports.Registry | None = None, check_image: str = "python:3.11-slim",
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        """`budget_seconds`: what the check inside the run may take (ready + version + score), as
        DockerSmokeRunner's budget. `run_timeout_seconds`: how long the whole run may take, queueing and
        pulling the image included; also ACR's run timeout (at least 300 s, ACR's minimum). `registry` reads
        the image's smoke contract (its label; without a registry, or for an image of another registry, model_api's
        contract); `check_image` is the Python image that runs the check against an image that declares one."""
        self.client = client
        self.resource_group = resource_group
        self.registry_name = registry_name
        self.budget_seconds = budget_seconds
        self.run_timeout_seconds = run_timeout_seconds
        self.poll_seconds = poll_seconds
        self.cpu = cpu
        self.environment = {"MODEL_API_WORKERS": "1"} if environment is None else dict(environment)
        self.blob_options = dict(blob_options or {})
        self.registry, self.check_image = registry, check_image
        self.clock = clock
        self.sleep = sleep

    def run(self, ref: str, expected: ports.Expectation, *,
            evaluation: ports.Evaluation | None = None) -> ports.Verdict:
        started = self.clock()
        try:
            wanted = contract.of_image(self.registry, ref) if self.registry is not None else contract.Contract()
        except ValueError as e:
            return ports.Verdict(passed=False, reason=str(e), seconds=round(self.clock() - started, 3))
        except errors.NotFound:
            raise errors.NotFound(f"image {ref} is not in the registry") from None
        source = self._evaluation_source(evaluation) if evaluation is not None else None
        run_id = self._schedule(ref, expected, wanted, source=source, evaluation=evaluation)
        log.info("smoke run scheduled", extra={"run_id": run_id, "ref": ref, "release_id": expected.release_id})
        extra = evaluation.seconds if evaluation is not None else 0.0  # the evaluation's own budget, on top
        run = self._wait(run_id, deadline=started + self.run_timeout_seconds + extra)
        status = acr_runs.status_of(run)

        def verdict(reason: str, steps: tuple[tuple[str, float], ...] = (), predictions=None) -> ports.Verdict:
            queued = acr_runs.seconds_between(getattr(run, "create_time", None), getattr(run, "start_time", None))
            steps = ((("queue", queued),) if queued is not None else ()) + steps
            return ports.Verdict(passed=not reason, reason=reason, seconds=round(self.clock() - started, 3),
                                 steps=steps, predictions=predictions)

        if status in acr_runs.IN_FLIGHT:
            self._cancel(run_id)
            if status == acr_runs.QUEUED:
                raise errors.TransientError(f"ACR Tasks did not start smoke run {run_id} within "
                                            f"{self.run_timeout_seconds:g} s (cancelled)")
            return verdict(f"smoke run {run_id} did not finish within {self.run_timeout_seconds + extra:g} s "
                           "(cancelled)")
        text = acr_runs.read_log_tail(acr_runs.log_link(self.client, self.resource_group, self.registry_name, run_id),
                                      **({"max_bytes": EVALUATION_LOG_BYTES} if evaluation else {}),
                                      **self.blob_options)
        found = parse_verdict(text)
        if found is not None:
            passed, reason, steps = found
            if passed and status != acr_runs.SUCCEEDED:
                reason = f"smoke run {run_id} ended {status} after its check passed"
            predictions = None
            if passed and not reason and evaluation is not None:
                predictions = parse_predictions(text)
                if len(predictions) != len(evaluation.rows):
                    reason = (f"smoke run {run_id} reported {len(predictions)} predictions for the "
                              f"{len(evaluation.rows)} rows of the evaluation set")
            return verdict("" if passed and not reason else reason or "the check failed without a reason", steps,
                           None if reason or predictions is None else tuple(predictions))
        if status == acr_runs.TIMEOUT:
            return verdict(f"smoke run {run_id} timed out (run timeout {self._run_timeout(extra)} s)")
        if _NO_IMAGE.search(text):
            raise errors.NotFound(f"image {ref} is not in the registry (smoke run {run_id} could not pull it)")
        message = " ".join(str(getattr(run, "run_error_message", None) or "").split())[:200]
        detail = "; ".join(part for part in (message, acr_runs.last_lines(text)) if part)
        return verdict(f"smoke run {run_id} ended {status or 'without a status'} with no verdict"
                       + (f": {detail}" if detail else ""))

    def task_yaml(self, ref: str, expected: ports.Expectation, wanted: contract.Contract | None = None, *,
                  evaluation: ports.Evaluation | None = None) -> str:
        """The multi-step task of one smoke test (the module docstring shows its shape)."""
        wanted = wanted or contract.Contract()
        config = {"url": f"http://app:{wanted.port}", "budget": self.budget_seconds, "model_dir": MODEL_DIR,
                  "release_id": expected.release_id, "model_sha256": expected.model_sha256, "commit": expected.commit,
                  **({**json.loads(wanted.label()), "own": True} if wanted.own else {}),
                  **({"evaluation": f"{WORKSPACE}/{EVALUATION_FILE}"} if evaluation is not None else {})}
        runner = self.check_image if wanted.own else ref  # model_api brings its own Python and sample files
        check = (f'{runner} python -c "import base64,sys;exec(base64.b64decode(sys.argv[1]))" '
                 f"{_b64(CHECK_SCRIPT.read_bytes())} {_b64(json.dumps(config).encode())}")
        env = [f"{k}={v}" for k, v in self.environment.items()]
        step_timeout = math.ceil(self.budget_seconds + (evaluation.seconds if evaluation is not None else 0)) + 60
        return "\n".join([
            "version: v1.1.0",
            f"stepTimeout: {step_timeout + 60}",
            "steps:",
            "  - id: app",
            f"    cmd: {json.dumps(ref)}",
            "    detach: true",
            f"    env: {json.dumps(env)}",
            "  - id: check",
            f"    cmd: {json.dumps(check)}",
            f"    timeout: {step_timeout}",
            "",
        ])

    # -- ARM --------------------------------------------------------------------------------------------------
    def _evaluation_source(self, evaluation: ports.Evaluation) -> str:
        """The evaluation set as the run's source (a tar.gz of one JSON file, uploaded as a build context is):
        the check step finds it in the run's working directory. Its relative path."""
        doc = json.dumps({"rows": evaluation.rows, "batch": evaluation.batch, "seconds": evaluation.seconds}).encode()
        with tempfile.TemporaryDirectory(prefix="shipbot-evaluation-") as folder:
            archive = Path(folder) / "source.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                info = tarfile.TarInfo(EVALUATION_FILE)
                info.size, info.mode = len(doc), 0o644
                tar.addfile(info, io.BytesIO(doc))
            return acr_runs.upload_source(self.client, self.resource_group, self.registry_name, archive,
                                          what="the evaluation set", **self.blob_options)

    def _schedule(self, ref: str, expected: ports.Expectation, wanted: contract.Contract, *,
                  source: str | None = None, evaluation: ports.Evaluation | None = None) -> str:
        from azure.mgmt.containerregistrytasks import models

        request = models.EncodedTaskRunRequest(
            encoded_task_content=_b64(self.task_yaml(ref, expected, wanted, evaluation=evaluation).encode()),
            values_property=[], source_location=source,
            timeout=self._run_timeout(evaluation.seconds if evaluation is not None else 0.0),
            platform=models.PlatformProperties(**acr_runs.PLATFORM),
            agent_configuration=models.AgentProperties(cpu=self.cpu), is_archive_enabled=False)
        try:
            run = self.client.registries.schedule_run(self.resource_group, self.registry_name, request)
        except AzureError as e:
            raise acr_runs.translate(e, f"scheduling the smoke test of {ref}") from None
        if not getattr(run, "run_id", None):
            raise errors.TransientError(f"ACR Tasks scheduled the smoke test of {ref} but gave no run id")
        return run.run_id

    def _wait(self, run_id: str, *, deadline: float) -> Any:
        """Polls the run until it is over or `deadline` (a clock reading) passed; returns it as last read."""
        while True:
            try:
                run = self.client.runs.get(self.resource_group, self.registry_name, run_id)
            except AzureError as e:
                raise acr_runs.translate(e, f"reading smoke run {run_id}") from None
            remaining = deadline - self.clock()
            if acr_runs.status_of(run) not in acr_runs.IN_FLIGHT or remaining <= 0:
                return run
            self.sleep(min(self.poll_seconds, remaining))

    def _cancel(self, run_id: str) -> None:
        try:
            self.client.runs.cancel(self.resource_group, self.registry_name, run_id)
        except AzureError:
            log.warning("could not cancel smoke run %s", run_id, exc_info=True)

    def _run_timeout(self, extra: float = 0.0) -> int:
        return max(300, math.ceil(self.run_timeout_seconds + extra))


def parse_predictions(log_text: str) -> list[Any]:
    """The evaluation's answers, in row order, from the check's `SHIPBOT-PREDICTIONS` lines (a batch a line)."""
    batches: dict[int, list[Any]] = {}
    for line in log_text.splitlines():
        match = _PREDICTIONS.search(line)
        if not match:
            continue
        try:
            found = json.loads(match.group(1))
            batches[int(found["start"])] = list(found["predictions"])
        except (ValueError, KeyError, TypeError):
            continue
    ordered: list[Any] = []
    for start in sorted(batches):
        if start != len(ordered):  # a batch missing from the log: report what is there, the count tells
            break
        ordered += batches[start]
    return ordered


def parse_verdict(log_text: str) -> tuple[bool, str, tuple[tuple[str, float], ...]] | None:
    """(passed, reason, steps) from the last verdict line of a run's log; None when it has none."""
    for line in reversed(log_text.splitlines()):
        match = _VERDICT.search(line)
        if not match:
            continue
        try:
            found = json.loads(match.group(1))
            steps = tuple((str(name), float(seconds)) for name, seconds in found.get("steps", []))
            return bool(found["passed"]), str(found.get("reason") or ""), steps
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
