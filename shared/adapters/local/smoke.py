"""DockerSmokeRunner: smoke-tests a release image as a throwaway container on the local Docker engine
(ports.SmokeRunner); an ACR Task run stands here in Azure.

One run, all within the runner's budget: create the container from the image by digest on a port the engine
picks on 127.0.0.1, read the model folder's sample-request.json and sample-response.json out of the image
(the engine's archive API: no exec, no shell needed), start it, wait for /readyz (noticing at once when the
container exits or the model fails to load), check /version against the Expectation, POST the sample to
/score and compare the answer numerically with the sample response (a model with none, an MLflow model
smoke-tested with its input example, must answer one prediction per row). The container is always removed.

An image that misbehaves gives a red Verdict whose reason an operator can act on. An image that is not in the
registry is NotFound; a Docker engine that does not answer is a TransientError: neither is the image's fault.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import httpx

from shared import errors, ports
from shared.contract import Contract, first_difference, per_row
from shared.evaluation import predictions as evaluation_predictions
from shared.adapters.local import containers

MODEL_DIR = "/var/azureml-app/model"
REQUEST_FILE, RESPONSE_FILE = "sample-request.json", "sample-response.json"
log = logging.getLogger(__name__)


class DockerSmokeRunner:
    def __init__(self, *, client: docker.DockerClient, budget_seconds: float = 120.0,
                 name_prefix: str = "shipbot-smoke", environment: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`environment` is passed to the container; the default runs one model_api worker, which is all a
        smoke test needs on a small machine."""
        self.client = client
        self.budget_seconds = budget_seconds
        self.name_prefix = name_prefix
        self.environment = {"MODEL_API_WORKERS": "1"} if environment is None else dict(environment)
        self.clock = clock

    def run(self, ref: str, expected: ports.Expectation, *,
            evaluation: ports.Evaluation | None = None) -> ports.Verdict:
        started = self.clock()
        deadline = started + self.budget_seconds
        steps: list[tuple[str, float]] = []
        mark = started

        def step(name: str) -> None:
            nonlocal mark
            now = self.clock()
            steps.append((name, round(now - mark, 3)))
            mark = now

        def verdict(reason: str = "", predictions: tuple | None = None) -> ports.Verdict:
            return ports.Verdict(passed=not reason, reason=reason, seconds=round(self.clock() - started, 3),
                                 steps=tuple(steps), predictions=predictions)

        name = f"{self.name_prefix}-{uuid.uuid4().hex[:10]}"
        container = None
        try:
            container = self._create(ref, name, expected)
            try:
                contract = containers.contract_of(container)
                sample, wanted = contract.request, contract.expect_json
                if not contract.own:  # model_api: the sample files travel in its model folder
                    sample = json.loads(containers.read_file(container, f"{MODEL_DIR}/{REQUEST_FILE}"))
                    wanted = _response(container)
            except FileNotFoundError as e:
                return verdict(f"the image has no {e}: nothing to smoke-test with")
            except ValueError as e:
                return verdict(f"the image's sample files are unusable: {containers.short(str(e))}")
            reason = containers.start(container)
            if reason:
                return verdict(reason)
            base_url = f"http://127.0.0.1:{containers.host_port(container)}"
            step("start")

            ready_budget = min(self.budget_seconds, contract.ready_seconds or self.budget_seconds)
            reason = containers.await_ready(container, base_url, deadline=min(deadline, self.clock() + ready_budget),
                                            budget_seconds=ready_budget, clock=self.clock)
            step("ready")
            if reason:
                return verdict(reason)

            reason = containers.check_version(base_url, expected, timeout=min(10.0, deadline - self.clock()),
                                              path=contract.identity_path, loose=contract.own)
            step("version")
            if reason:
                return verdict(reason)

            left = deadline - self.clock()
            reason = self._score(base_url, contract, sample, wanted, timeout=min(left, contract.request_seconds or left))
            step("score")
            if reason or evaluation is None:
                return verdict(reason)
            reason, predictions = evaluate(base_url + contract.score_path, evaluation, clock=self.clock)
            step("evaluate")
            return verdict(reason, predictions if not reason else None)
        except containers.ENGINE_ERRORS as e:
            raise errors.TransientError(f"Docker engine error while smoke-testing {ref}: "
                                        f"{containers.short(str(getattr(e, 'explanation', None) or e))}") from None
        finally:
            if container is not None:
                _remove(container)

    def _create(self, ref: str, name: str, expected: ports.Expectation):
        labels = {"dev.shipbot.smoke": "true", "dev.shipbot.ref": ref, "dev.shipbot.release": expected.release_id}
        try:
            return containers.create_model_api(self.client, ref, name=name, host_port=None, labels=labels,
                                               environment=self.environment)
        except docker.errors.NotFound:
            raise errors.NotFound(f"image {ref} is not in the registry") from None

    def _score(self, base_url: str, contract: Contract, sample: Any, wanted: Any, *,
               timeout: float) -> str:
        what = f"POST {contract.score_path}"
        if timeout <= 0:
            return f"no time left for {what} within {self.budget_seconds:g} s"
        try:
            response = httpx.post(f"{base_url}{contract.score_path}", json=sample, timeout=timeout)
        except httpx.HTTPError as e:
            return f"{what} did not answer: {type(e).__name__}"
        if response.status_code != contract.expect_status:
            return (f"{what} answered {response.status_code}, expected {contract.expect_status}: "
                    f"{containers.short(response.text)}")
        if wanted is None and not contract.expect_keys and contract.own:
            return ""
        try:
            scored = response.json()
        except ValueError:
            return f"{what} answered something that is not JSON: {containers.short(response.text)}"
        missing = [key for key in contract.expect_keys if not isinstance(scored, dict) or key not in scored]
        if missing:
            return f"{what} answered without {', '.join(repr(k) for k in missing)}"
        if wanted is None:  # model_api with no sample response (an MLflow model): one prediction per row
            return "" if contract.own else (f"{what}: " + why if (why := per_row(scored, sample)) else "")
        difference = first_difference(scored, wanted, rel_tol=contract.tolerance)
        return f"score differs from {RESPONSE_FILE} at {difference}" if difference else ""


def evaluate(url: str, evaluation: ports.Evaluation, *, clock: Callable[[], float] = time.monotonic,
             ) -> tuple[str, tuple[Any, ...] | None]:
    """An evaluation set's rows POSTed to the candidate's scoring route, `batch` rows at a time, within the
    evaluation's own budget: (why it failed or "", the predictions in row order). One client, one connection."""
    deadline = clock() + evaluation.seconds
    found: list[Any] = []
    with httpx.Client(timeout=httpx.Timeout(evaluation.seconds, connect=5.0)) as client:
        for start in range(0, len(evaluation.rows), evaluation.batch):
            rows = evaluation.rows[start:start + evaluation.batch]
            where = f"evaluation rows {start + 1}-{start + len(rows)}"
            left = deadline - clock()
            if left <= 0:
                return f"{where}: the evaluation took longer than its {evaluation.seconds:g} s", None
            try:
                response = client.post(url, json={"data": rows}, timeout=left)
            except httpx.HTTPError as e:
                return f"{where}: POST did not answer: {type(e).__name__}", None
            if response.status_code != 200:
                return f"{where}: POST answered {response.status_code}: {containers.short(response.text)}", None
            try:
                found += evaluation_predictions(response.json(), len(rows))
            except ValueError as e:
                return f"{where}: {e}", None
    return "", tuple(found)


def _response(container) -> Any:
    """model_api's sample response, None when the model came without one (an MLflow model)."""
    try:
        return json.loads(containers.read_file(container, f"{MODEL_DIR}/{RESPONSE_FILE}"))
    except FileNotFoundError:
        return None


def _remove(container) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError:  # a leftover container must not turn the verdict into an error
        log.warning("could not remove the smoke-test container", extra={"container": container.name}, exc_info=True)
