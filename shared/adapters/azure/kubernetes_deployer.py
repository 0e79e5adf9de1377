"""KubernetesDeployer: environments as Deployments on AKS or any Kubernetes cluster (ports.Deployer).

Each environment names a Target: a namespace, a Deployment in it, the container of its pod template that runs
the release, and the Service (`name:port`) in front of it. Infra creates them; ShipBot only moves the image.

A rollout, in the Verdict's steps:
  patch     a strategic-merge patch of the named container's image to `repository@sha256:...`, carrying the
            resourceVersion it read as a precondition, so the image it records as previous is exactly the one
            it replaced. The API server answers 409 when the Deployment changed in between: read again and
            retry (bounded, tenacity, injectable sleep); still 409 after that is a TransientError with nothing
            changed. The patch also sets the annotations `kubernetes.io/change-cause` (what `kubectl rollout
            history` shows) and `shipbot.dev/previous-image`.
  rollout   wait as `kubectl rollout status` does (rollout_status below): the controller has observed the
            new generation, every replica is updated and available, none of the old is left; a Progressing
            condition with reason ProgressDeadlineExceeded fails at once. It watches the one Deployment
            (fieldSelector metadata.name=...) from the resourceVersion it read, re-reading when a watch ends,
            within `rollout_seconds`. A watch the API server forbids (403: a Role without `watch`) is
            followed by reading the Deployment every POLL_SECONDS instead, for that target from then on.
  verify    GET the image's identity route (its smoke contract, shared.contract: model_api's /version unless
            its label says otherwise) through the API server's service proxy and compare it with the Expectation
            (contract.identity_mismatch, as the local deployer does); an app without one must answer its
            readiness path, the rollout having shown that the pods run the digest. Right after a rollout the Service may still route to a pod on its way out, so a
            mismatch is asked again until `verify_seconds` have passed; the first match passes.
  rollback  after a failed rollout or verification: patch the previous image back, with the change-cause it
            had (the controller reuses its ReplicaSet and copies the Deployment's annotations onto it, so
            `kubectl rollout history` keeps that revision's own cause, as `kubectl rollout undo` does), and wait
            for it the same way; the Verdict's reason then ends with "rolled back to <previous image>", or says
            that the image is set again but its rollout did not complete, or that the patch back failed.
Deploying the image that already runs skips the patch and only waits and verifies (a redelivered job converges
without a restart). One rollout per environment at a time is the ledger lease's job.

RBAC, namespaced Role per environment: deployments get, patch, watch (resourceNames: the Deployment; the watch
is authorized by name through its field selector) and services/proxy get (resourceNames: the Service exactly
as the URL names it, the target's `name:port`, which infra derives from the same setting). Nothing else: no
list, create, delete, pods or secrets.

Errors: a missing Deployment or container is NotFound; 401/403 is a PermanentError (fix the identity or its
Role): the API server's own 401/403 on /version (a metav1.Status, not the app's answer passed through) is
not asked again, and once the new image may be running it is rolled back first, then the PermanentError
says so; the release is not blamed for a refused credential; a 409 that outlives the retries, 429, 5xx and connection failures are TransientError. Messages carry
the status and the API server's message, never a header: the bearer token stays in the client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import tenacity
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from shared import contract, errors, ports

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
CHANGE_CAUSE = "kubernetes.io/change-cause"
PREVIOUS_IMAGE = "shipbot.dev/previous-image"
log = logging.getLogger(__name__)
DEFAULT_TARGETS = {"staging": "staging/app/model-api@app:80", "production": "production/app/model-api@app:80"}
POLL_SECONDS = 1.0          # between re-reads after a failed read, and between /version attempts
REQUEST_SECONDS = 10.0      # one API call, connect and read
CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True, slots=True)
class Target:
    """Where an environment lives: `namespace/deployment/container@service:port`."""

    namespace: str
    deployment: str
    container: str
    service: str          # as the service proxy names it: `name:port` (port number or name)
    url: str = ""         # shown to operators; empty: the API server's service proxy URL

    @classmethod
    def parse(cls, spec: str, *, url: str = "") -> Target:
        """`staging/app/model-api@app:80` -> Target("staging", "app", "model-api", "app:80")."""
        path, _, service = spec.strip().partition("@")
        parts = path.split("/")
        if len(parts) != 3 or not all(parts) or not service or service.count(":") != 1 or service.endswith(":"):
            raise errors.PermanentError(f"a Kubernetes target is namespace/deployment/container@service:port, "
                                        f"like {DEFAULT_TARGETS['staging']}; not {spec!r}")
        return cls(*parts, service=service, url=url)

    def __str__(self) -> str:
        return f"Deployment {self.namespace}/{self.deployment}"


class Rollout(NamedTuple):
    done: bool
    failed: bool
    message: str


def rollout_status(deployment: client.V1Deployment) -> Rollout:
    """What `kubectl rollout status` says of a Deployment (its DeploymentStatusViewer): done, failed (the progress
    deadline passed), or still waiting, with kubectl's message. Pure."""
    name, spec, status = deployment.metadata.name, deployment.spec, deployment.status or client.V1DeploymentStatus()
    if (deployment.metadata.generation or 0) > (status.observed_generation or 0):
        return Rollout(False, False, "waiting for deployment spec update to be observed")
    progressing = next((c for c in status.conditions or () if c.type == "Progressing"), None)
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        return Rollout(False, True, f'deployment "{name}" exceeded its progress deadline')
    desired, updated = spec.replicas if spec.replicas is not None else 1, status.updated_replicas or 0
    total, available = status.replicas or 0, status.available_replicas or 0
    if updated < desired:
        return Rollout(False, False, f"{updated} out of {desired} new replicas have been updated")
    if total > updated:
        return Rollout(False, False, f"{total - updated} old replicas are pending termination")
    if available < updated:
        return Rollout(False, False, f"{available} of {updated} updated replicas are available")
    return Rollout(True, False, f'deployment "{name}" successfully rolled out')


class KubernetesDeployer:
    def __init__(self, *, api_client: client.ApiClient, targets: Mapping[str, Target],
                 contracts: Callable[[str], contract.Contract] | None = None,
                 rollout_seconds: float = 240.0, verify_seconds: float = 30.0, conflict_attempts: int = 5,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        """`api_client` carries the cluster's URL, CA and credentials (aks_credentials.api_client for AKS,
        kubeconfig_api_client for any cluster); `targets` maps each environment to its Target; `contracts` gives
        the smoke contract of a ref (shared.contract.of_image on the registry; default: model_api's). A deploy takes at
        most about 2 x rollout_seconds + verify_seconds (rollout, verify, rollback): 240 + 30 + 240 s stays within
        the Functions host's 10-minute functionTimeout."""
        self.api_client = api_client
        self.apps, self.core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
        self.targets = dict(targets)
        self.contracts = contracts or (lambda ref: contract.Contract())
        self.rollout_seconds, self.verify_seconds = rollout_seconds, verify_seconds
        self.conflict_attempts = conflict_attempts
        self.clock, self.sleep = clock, sleep
        self._unwatchable: set[Target] = set()  # targets whose watch the API server refused: polled instead

    def url(self, environment: str) -> str:
        target = self._target(environment)
        host = self.api_client.configuration.host.rstrip("/")
        return target.url or f"{host}/api/v1/namespaces/{target.namespace}/services/{target.service}/proxy/"

    def get_running(self, environment: str) -> str | None:
        target = self._target(environment)
        try:
            deployment = self._read(target)
        except errors.NotFound:
            return None
        return _image(deployment, target.container)

    def deploy(self, environment: str, ref: str, expected: ports.Expectation) -> ports.Verdict:
        target = self._target(environment)
        started = mark = self.clock()
        steps: list[tuple[str, float]] = []

        def step(what: str) -> None:
            nonlocal mark
            now = self.clock()
            steps.append((what, round(now - mark, 3)))
            mark = now

        def verdict(reason: str = "") -> ports.Verdict:
            return ports.Verdict(passed=not reason, reason=reason, seconds=round(self.clock() - started, 3),
                                 steps=tuple(steps))

        try:
            wanted = self.contracts(ref)
        except ValueError as e:  # nothing was changed: the image cannot be checked
            return verdict(str(e))
        current = self._read(target)
        previous, previous_cause = _image(current, target.container), _annotation(current, CHANGE_CAUSE)
        if previous is None:
            raise errors.NotFound(f"{target} has no container {target.container!r}")
        if previous != ref:
            previous, previous_cause = self._patch_image(target, ref, cause=f"shipbot: {expected.release_id or ref}")
            step("patch")
        refused: errors.PermanentError | None = None
        try:  # from here on the new image may be running: any failure ends in a rollback
            reason = self._await_rollout(target)
            step("rollout")
            if not reason:
                reason = self._verify(target, expected, wanted)
                step("verify")
        except errors.PermanentError as e:  # a refused credential or Role: not the release's fault
            reason, refused = str(e), e
        except errors.ReleaseError as e:
            reason = str(e)
        if not reason:
            return verdict()
        if previous == ref:
            outcome = f"{environment} ran {ref} before, so there is nothing to roll back to"
        else:
            outcome = self._roll_back(target, previous, previous_cause, ref)
            step("rollback")
        if refused is not None:
            raise errors.PermanentError(f"{reason}; {outcome}") from None
        return verdict(f"{reason}; {outcome}")

    def _roll_back(self, target: Target, previous: str, cause: str | None, ref: str) -> str:
        """Puts `previous` back with the change-cause it had, so that its ReplicaSet (which the controller
        reuses, copying the Deployment's annotations onto it) keeps its own line in `kubectl rollout history`,
        as `kubectl rollout undo` does. Says what happened, in words."""
        try:
            self._patch_image(target, previous, cause=cause)
        except errors.ReleaseError as e:
            return f"rolling back to {previous} failed: {e}"
        try:
            back = self._await_rollout(target)
        except errors.ReleaseError as e:
            back = str(e)
        if back:
            return f"rolled back to {previous} (its image is set again), but that rollout did not complete: {back}"
        return f"rolled back to {previous}"

    # -- the steps --------------------------------------------------------------------------------------------
    def _patch_image(self, target: Target, image: str, *, cause: str | None) -> tuple[str, str | None]:
        """Sets the container's image and the change-cause (None removes it); returns the image and the
        change-cause it replaced. Retries a 409 on a fresh read."""

        def attempt() -> tuple[str, str | None]:
            current = self._read(target)
            previous = _image(current, target.container)
            if previous is None:
                raise errors.NotFound(f"{target} has no container {target.container!r}")
            body = {"metadata": {"resourceVersion": current.metadata.resource_version,
                                 "annotations": {CHANGE_CAUSE: cause, PREVIOUS_IMAGE: previous}},
                    "spec": {"template": {"spec": {"containers": [{"name": target.container, "image": image}]}}}}
            self._call(f"patch {target}", lambda: self.apps.patch_namespaced_deployment(
                target.deployment, target.namespace, body, field_manager="shipbot", _content_type=STRATEGIC_MERGE,
                _request_timeout=REQUEST_SECONDS))
            return previous, _annotation(current, CHANGE_CAUSE)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.conflict_attempts),
            wait=tenacity.wait_exponential(multiplier=0.2, max=2.0) + tenacity.wait_random(0, 0.2),
            retry=tenacity.retry_if_exception_type(_Conflict), sleep=self.sleep, reraise=True)
        try:
            return retrying(attempt)
        except _Conflict:
            raise errors.TransientError(f"{target} kept changing while its image was patched "
                                        f"({self.conflict_attempts} conflicts); nothing was changed") from None

    def _await_rollout(self, target: Target) -> str:
        """"" once the rollout is complete; otherwise why not (deadline exceeded, out of time, deleted)."""
        deadline = self.clock() + self.rollout_seconds
        state = Rollout(False, False, "not read yet")
        while True:
            try:
                deployment = self._read(target)
            except errors.TransientError:
                deployment = None
            except errors.NotFound:
                return f"{target} was deleted during the rollout"
            if deployment is not None:
                state = rollout_status(deployment)
                if state.done or state.failed:
                    return "" if state.done else state.message
            left = deadline - self.clock()
            if left <= 0:
                return f"the rollout did not complete within {self.rollout_seconds:g} s: {state.message}"
            if deployment is None or target in self._unwatchable:
                self.sleep(min(POLL_SECONDS, left))
                continue
            try:
                state = self._watch(target, deployment.metadata.resource_version, deadline, state)
            except _WatchRefused as e:  # the Role may not watch: follow the rollout by reading it instead
                log.warning("%s: the watch was refused (%s); polling with GET every %g s", target, e, POLL_SECONDS)
                self._unwatchable.add(target)
                continue
            if state.done or state.failed:
                return "" if state.done else state.message
            self.sleep(min(POLL_SECONDS, max(0.0, deadline - self.clock())))  # a watch that ended early: no spin

    def _watch(self, target: Target, resource_version: str, deadline: float, state: Rollout) -> Rollout:
        """Follows the Deployment's events until its rollout is done or failed, the watch ends or time is up."""
        left = max(1, int(deadline - self.clock()))
        watcher = watch.Watch()
        try:
            for event in watcher.stream(self.apps.list_namespaced_deployment, target.namespace,
                                        field_selector=f"metadata.name={target.deployment}",
                                        resource_version=resource_version, timeout_seconds=left,
                                        _request_timeout=(REQUEST_SECONDS, left + REQUEST_SECONDS)):
                if event["type"] == "DELETED":
                    return Rollout(False, True, f"{target} was deleted during the rollout")
                state = rollout_status(event["object"])
                if state.done or state.failed or self.clock() >= deadline:
                    break
        except ApiException as e:  # 410 Gone (the version is too old) and friends: read again
            if e.status == 403:  # the Role may not watch (a 401, a bad token, fails the next read instead)
                raise _WatchRefused(f"{e.status} {_message(e)}") from None
            if e.status == 401:
                raise _translate(e, f"watch {target}") from None
        except CONNECTION_ERRORS:
            pass
        finally:
            watcher.stop()
        return state

    def _verify(self, target: Target, expected: ports.Expectation, wanted: contract.Contract) -> str:
        deadline = self.clock() + self.verify_seconds
        while True:
            reason = self._ask(target, expected, wanted)
            if not reason:
                return ""
            left = deadline - self.clock()
            if left <= 0:
                return reason
            self.sleep(min(POLL_SECONDS, left))

    def _ask(self, target: Target, expected: ports.Expectation, wanted: contract.Contract) -> str:
        """The contract's identity route must name the release (model_api's /version, field by field); an app
        without one must answer its readiness path, the rollout having shown that the digest runs."""
        path = wanted.identity_path or wanted.ready_path
        where = f"{path} through the service proxy of {target.service}"
        try:
            response = self.core.connect_get_namespaced_service_proxy_with_path(
                target.service, target.namespace, path.lstrip("/"), _preload_content=False,
                _request_timeout=REQUEST_SECONDS)
            data = response.data
        except ApiException as e:
            if e.status in (401, 403) and _from_api_server(e):  # the credential, not the app: stop asking
                raise _translate(e, f"get {where}") from None
            return f"{where} answered {e.status}: {_message(e)}"
        except CONNECTION_ERRORS as e:
            return f"{where} did not answer: {type(e).__name__}"
        if wanted.identity_path is None:
            return ""
        try:
            version = json.loads(data)
        except ValueError:
            return f"{path} answered something that is not JSON: {_short(data.decode('utf-8', 'replace'))}"
        return contract.identity_mismatch(version if isinstance(version, dict) else {}, expected, path=path,
                                          loose=wanted.own)

    # -- helpers ----------------------------------------------------------------------------------------------
    def _read(self, target: Target) -> client.V1Deployment:
        return self._call(f"read {target}", lambda: self.apps.read_namespaced_deployment(
            target.deployment, target.namespace, _request_timeout=REQUEST_SECONDS))

    @staticmethod
    def _call(what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ApiException as e:
            if e.status == 409:
                raise _Conflict() from None
            raise _translate(e, what) from None
        except CONNECTION_ERRORS as e:
            raise errors.TransientError(f"the Kubernetes API server did not answer ({what}): "
                                        f"{type(e).__name__}") from None

    def _target(self, environment: str) -> Target:
        try:
            return self.targets[environment]
        except KeyError:
            raise errors.NotFound(f"no environment {environment!r}; known: {', '.join(self.targets)}") from None


class _Conflict(Exception):
    """409 from the API server: the object changed since it was read."""


class _WatchRefused(Exception):
    """401/403 on a watch: the identity may read the Deployment but not watch it."""


def _annotation(deployment: client.V1Deployment, key: str) -> str | None:
    return (deployment.metadata.annotations or {}).get(key)


def _from_api_server(e: ApiException) -> bool:
    """Whether an error is the API server's own (a metav1.Status), not an answer the proxy passed through."""
    try:
        body = json.loads(e.body or "")
    except (TypeError, ValueError):
        return False
    return isinstance(body, dict) and body.get("kind") == "Status" and body.get("apiVersion") == "v1"


def _image(deployment: client.V1Deployment, container: str) -> str | None:
    for each in deployment.spec.template.spec.containers or ():
        if each.name == container:
            return each.image
    return None


def _translate(e: ApiException, what: str) -> errors.ReleaseError:
    detail = f"{what}: {e.status} {_message(e)}"
    if e.status == 404:
        return errors.NotFound(f"{detail} (infra creates the Deployment; ShipBot only patches its image)")
    if e.status in (401, 403):
        return errors.PermanentError(f"{detail} (the identity or its Role lacks this permission)")
    if e.status in (400, 415, 422):
        return errors.PermanentError(detail)
    return errors.TransientError(detail)


def _message(e: ApiException) -> str:
    """The API server's own message (a metav1.Status), else the HTTP reason; never headers."""
    try:
        body = json.loads(e.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return _short(body["message"])
    return _short(str(e.reason or ""))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
