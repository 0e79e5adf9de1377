"""DockerDeployer: environments as named containers on the local Docker engine (ports.Deployer); a
Kubernetes Deployment on AKS stands here in Azure.

`shipbot-<env>` publishes 127.0.0.1:<env port> -> model_api's 5001, restarts unless stopped, and carries the
labels `dev.shipbot.environment`, `dev.shipbot.release` and `dev.shipbot.ref` (repository@digest: what
get_running reports).

A rollout, in four steps (the Verdict's steps):
  start   the new ref as `shipbot-<env>-next` on a port the engine picks;
  ready   wait for its /readyz (at most verify_seconds; at once if it exits or its model fails to load);
  verify  its /version against the Expectation; the -next container is then removed. Until here the
          environment has served the old release throughout, and any failure leaves it so;
  switch  a container's published port cannot change, so the environment's container is recreated: stop the
          old one (SIGTERM, a short grace), create the new ref on the environment's port, wait ready and verify
          again. The gap without service is one container start plus model load (about the `ready` step).
          Should that final check fail, the previous ref is recreated the same way and the Verdict says it
          was rolled back.
The rehearsal on -next is what makes the switch safe: an image that cannot start or reports the wrong release
never takes the environment's port. Deploying the ref that already runs and verifies is a no-op (a redelivered
event converges without a restart). One rollout per environment at a time is the ledger lease's job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import docker
import docker.errors
from docker.models.containers import Container

from shared import errors, ports
from shared.adapters.local import containers

DEFAULT_PORTS = {"staging": 8081, "production": 8080}
STOP_GRACE_SECONDS = 5
SERVING = ("running", "restarting")


class DockerDeployer:
    def __init__(self, *, client: docker.DockerClient, ports: Mapping[str, int] | None = None,
                 verify_seconds: float = 60.0, name_prefix: str = "shipbot",
                 environment: dict[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`ports` maps each environment to its port on 127.0.0.1; `environment` is passed to the containers."""
        self.client = client
        self.ports = dict(DEFAULT_PORTS if ports is None else ports)
        self.verify_seconds = verify_seconds
        self.name_prefix = name_prefix
        self.environment = dict(environment or {})
        self.clock = clock

    def url(self, environment: str) -> str:
        return f"http://127.0.0.1:{self._port(environment)}"

    def get_running(self, environment: str) -> str | None:
        container = self._find(self._name(environment))
        if container is None or container.status not in SERVING:
            return None
        return container.labels.get("dev.shipbot.ref")

    def deploy(self, environment: str, ref: str, expected: ports.Expectation) -> ports.Verdict:
        name, url = self._name(environment), self.url(environment)
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

        current = self._find(name)
        previous = (current.labels.get("dev.shipbot.ref"), current.labels.get("dev.shipbot.release", "")) \
            if current is not None and current.status in SERVING else (None, "")
        if previous[0] == ref and not _identify(current, url, expected, timeout=5):
            step("verify")
            return verdict()
        still = f"{environment} still runs {previous[0] or 'nothing'}"

        rehearsal = None
        try:
            rehearsal = self._create(environment, ref, expected.release_id, serving=False)
            reason = containers.start(rehearsal)
            if reason:
                step("start")
                return verdict(f"{ref} {reason.removeprefix('the container ')}; {still}")
            rehearsal_url = f"http://127.0.0.1:{containers.host_port(rehearsal)}"
            step("start")
            reason = containers.await_ready(rehearsal, rehearsal_url, deadline=self.clock() + self.verify_seconds,
                                            budget_seconds=self.verify_seconds, clock=self.clock)
            step("ready")
            if reason:
                return verdict(f"{ref} did not become ready: {reason}; {still}")
            reason = _identify(rehearsal, rehearsal_url, expected, timeout=10)
            step("verify")
            if reason:
                return verdict(f"{reason}; {still}")
        except docker.errors.NotFound:
            raise errors.NotFound(f"image {ref} is not in the registry") from None
        except containers.ENGINE_ERRORS as e:
            raise errors.TransientError(f"Docker engine error while starting {ref}: {_explain(e)}; {still}") from None
        finally:
            if rehearsal is not None:
                _remove(rehearsal)

        reason = self._switch(environment, ref, expected)
        if reason:
            reason = f"{ref} failed on {environment}'s port: {reason}; " + self._roll_back(environment, previous)
        step("switch")
        return verdict(reason)

    # -- the switch -------------------------------------------------------------------------------------------
    def _switch(self, environment: str, ref: str, expected: ports.Expectation) -> str:
        """Replaces the environment's container with `ref`; returns why it is not serving it, or ""."""
        name, url = self._name(environment), self.url(environment)
        try:
            old = self._find(name)
            if old is not None:
                old.stop(timeout=STOP_GRACE_SECONDS)
            container = self._create(environment, ref, expected.release_id, serving=True)
            reason = containers.start(container)
        except containers.ENGINE_ERRORS as e:
            return f"Docker engine error: {_explain(e)}"
        if reason:
            return reason
        reason = containers.await_ready(container, url, deadline=self.clock() + self.verify_seconds,
                                        budget_seconds=self.verify_seconds, clock=self.clock)
        if not reason and expected.release_id:
            reason = _identify(container, url, expected, timeout=10)
        return reason

    def _roll_back(self, environment: str, previous: tuple[str | None, str]) -> str:
        ref, release_id = previous
        if ref is None:
            containers.remove(self.client, self._name(environment))
            return f"{environment} runs nothing now (there was nothing to roll back to)"
        reason = self._switch(environment, ref, ports.Expectation(release_id))
        if reason:
            return f"rolling back to {ref} failed too: {reason}"
        return f"rolled back to {ref}"

    # -- helpers ----------------------------------------------------------------------------------------------
    def _create(self, environment: str, ref: str, release_id: str, *, serving: bool) -> Container:
        """The environment's container (its port, restarted unless stopped) or its rehearsal (`-next`, a port
        the engine picks, never restarted)."""
        name = self._name(environment) + ("" if serving else "-next")
        labels = {"dev.shipbot.environment": environment, "dev.shipbot.release": release_id,
                  "dev.shipbot.ref": ref, "dev.shipbot.role": "serving" if serving else "rehearsal"}
        return containers.create_model_api(self.client, ref, name=name, labels=labels,
                                           host_port=self._port(environment) if serving else None,
                                           environment=self.environment, restart=serving)

    def _find(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except containers.ENGINE_ERRORS as e:
            raise errors.TransientError(f"Docker engine error while reading {name}: {_explain(e)}") from None

    def _name(self, environment: str) -> str:
        self._port(environment)
        return f"{self.name_prefix}-{environment}"

    def _port(self, environment: str) -> int:
        try:
            return self.ports[environment]
        except KeyError:
            raise errors.NotFound(f"no environment {environment!r}; known: {', '.join(self.ports)}") from None


def _remove(container: Container) -> None:
    try:
        container.remove(force=True)
    except docker.errors.APIError:
        pass


def _explain(e: Exception) -> str:
    return containers.short(str(getattr(e, "explanation", None) or e))


def _identify(container: Container, url: str, expected: ports.Expectation, *, timeout: float) -> str:
    """Its identity route (the image's contract; model_api's /version) names the expected release."""
    contract = containers.contract_of(container)
    return containers.check_version(url, expected, timeout=timeout, path=contract.identity_path, loose=contract.own)
