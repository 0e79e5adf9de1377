"""An executor for tests/fakes/arm_acr.py that really runs what was scheduled, on the local Docker engine, the way
an ACR Tasks agent would (integration tests only):

    DockerBuildRequest      downloads the uploaded tar.gz from Azurite, `docker build`s it with the request's
                            Dockerfile path and arguments, pushes each of imageNames to the local registry (the
                            fake's login server, 127.0.0.1:5000) and reports the pushed digest in outputImages
    EncodedTaskRunRequest   decodes the task YAML and runs its steps as ACR's agent does, after its templating
                            and `$` aliases (tests/fakes/arm_acr.render): a `build`
                            step is `docker build` of the uploaded context with the step's -t, -f, --target,
                            --build-arg and --label words (shell-quoted, as the agent's shell reads them), a
                            `push` step pushes and lists the images in outputImages, a `cmd` step is
                            `docker run` on a network of the run's own, each container reachable by its step
                            id, `detach` steps left running, the others waited for (their `timeout`), the
                            run's uploaded source (if any) mounted at /workspace (the agent's home volume;
                            each image keeps its own working directory); a non-zero exit fails the run. Every container and the network are removed afterwards.

The run's log gets the build output or the containers' output, with lines like the agent's own
("Executing step ID: ..."), and is written to the log blob when the run ends. The run's timeout is enforced as
ACR does: a run past it ends as Timeout.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shlex
import shutil
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from shared.adapters.azure import acr_runs
from tests.fakes.arm_acr import FakeAcr, FakeRun


class DockerExecutor:
    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.threads: list[threading.Thread] = []

    def __call__(self, fake: FakeAcr, run: FakeRun) -> None:
        thread = threading.Thread(target=self._run, args=(fake, run), name=f"fake-acr-{run.run_id}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, fake: FakeAcr, run: FakeRun) -> None:
        log: list[str] = []
        run.status, run.started = acr_runs.RUNNING, dt.datetime.now(dt.UTC)
        deadline = time.monotonic() + int(run.request.get("timeout", 3600))
        try:
            if run.kind == "DockerBuildRequest":
                status, error, images = self._build(fake, run, log)
            else:
                status, error, images = self._task(fake, run, log, deadline)
        except Exception as e:  # noqa: BLE001 - the agent's own failure ends the run as Error, as ACR's does
            status, error, images = acr_runs.ERROR, f"{type(e).__name__}: {e}", []
        if time.monotonic() > deadline and status != acr_runs.SUCCEEDED:
            status, error = acr_runs.TIMEOUT, "run timed out"
        log.append(_line(f"Run ID: {run.run_id} was {'successful' if status == acr_runs.SUCCEEDED else 'failed'}"))
        run.finish(status, error=error, log="\n".join(log) + "\n", output_images=images)
        fake.write_log(run)

    # -- DockerBuildRequest ------------------------------------------------------------------------------------
    def _build(self, fake: FakeAcr, run: FakeRun, log: list[str]) -> tuple[str, str, list[dict[str, str]]]:
        request = run.request
        args = {a["name"]: a["value"] for a in request.get("arguments") or []}
        names = request.get("imageNames") or []
        tags = [f"{fake.login_server}/{name}" for name in names]
        log.append(_line(f"Executing step ID: build. Timeout(sec): {request.get('timeout')}"))
        if not self._docker_build(fake, run, log, dockerfile=request["dockerFilePath"], tag=tags[0] if tags else None,
                                  args=args, target=request.get("target"), nocache=bool(request.get("noCache"))):
            return acr_runs.FAILED, "failed during run, err: exit status 1", []
        images = []
        if request.get("isPushEnabled", True):
            for tag in tags:
                self.client.images.get(tags[0]).tag(tag)
                images.append(self._push_image(fake, tag, log))
        return acr_runs.SUCCEEDED, "", images

    def _docker_build(self, fake: FakeAcr, run: FakeRun, log: list[str], *, dockerfile: str, tag: str | None,
                      args: dict[str, str], target: str | None = None, labels: dict[str, str] | None = None,
                      nocache: bool = False) -> bool:
        """`docker build` of the run's uploaded context; False (the log says why) when it failed."""
        with tempfile.TemporaryFile() as context:
            fake.source_blob(run.request["sourceLocation"]).download_blob().readinto(context)
            context.seek(0)
            try:
                for chunk in self.client.api.build(fileobj=context, custom_context=True, encoding="gzip",
                                                   dockerfile=dockerfile, tag=tag, buildargs=args, target=target,
                                                   labels=labels, rm=True, forcerm=True, decode=True, nocache=nocache):
                    if "error" in chunk:
                        log.append(chunk["error"].rstrip())
                        return False
                    if chunk.get("stream", "").strip():
                        log.append(chunk["stream"].rstrip())
            except docker.errors.APIError as e:
                log.append(str(e.explanation))
                return False
        return True

    def _push_image(self, fake: FakeAcr, image: str, log: list[str]) -> dict[str, str]:
        """Pushes `login_server/repository:tag`; the run's outputImages entry for it."""
        name = image.removeprefix(f"{fake.login_server}/")
        repository, _, version = name.rpartition(":")
        digest = self._push(f"{fake.login_server}/{repository}", version, log)
        fake.images[(repository, version)] = digest
        return {"registry": fake.login_server, "repository": repository, "tag": version, "digest": digest}

    def _push(self, repository: str, tag: str, log: list[str]) -> str:
        digest = ""
        for event in self.client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise RuntimeError(f"push failed: {event['error']}")
            digest = event.get("aux", {}).get("Digest", digest)
        log.append(_line(f"Successfully pushed image: {repository}:{tag}"))
        return digest

    # -- EncodedTaskRunRequest -------------------------------------------------------------------------------
    def _task(self, fake: FakeAcr, run: FakeRun, log: list[str], deadline: float) -> tuple[str, str, list[dict[str, str]]]:
        task = run.task
        network = self.client.networks.create(f"acb_default_network_{run.run_id}_{uuid.uuid4().hex[:6]}")
        containers: list[Any] = []
        images: list[dict[str, str]] = []
        workspace = self._workspace(fake, run)
        try:
            for step in task["steps"]:
                timeout = min(int(step.get("timeout") or task.get("stepTimeout") or 600), deadline - time.monotonic())
                log.append(_line(f"Executing step ID: {step['id']}. Timeout(sec): {int(timeout)}, "
                                 f"Working directory: '', Network: '{network.name}'"))
                if "build" in step:
                    if not self._build_step(fake, run, step["build"], log):
                        log.append(_line(f"Step ID: {step['id']} marked as failed"))
                        return acr_runs.FAILED, "failed during run, err: exit status 1", []
                    continue
                if "push" in step:
                    images += [self._push_image(fake, image, log) for image in step["push"]]
                    continue
                container = self._start(step, network.name, workspace)
                containers.append(container)
                if step.get("detach"):
                    log.append(_line(f"Step ID: {step['id']} marked as successful (detached)"))
                    continue
                try:
                    code = container.wait(timeout=max(1, timeout))["StatusCode"]
                except requests.exceptions.ConnectionError:  # docker-py's read timeout
                    log.append(container.logs().decode("utf-8", "replace").rstrip())
                    return acr_runs.FAILED, f"failed to run step ID: {step['id']}: context deadline exceeded", []
                log.append(container.logs().decode("utf-8", "replace").rstrip())
                if code != 0:
                    log.append(_line(f"Step ID: {step['id']} marked as failed"))
                    return acr_runs.FAILED, f"failed during run, err: exit status {code}", []
                log.append(_line(f"Step ID: {step['id']} marked as successful"))
            return acr_runs.SUCCEEDED, "", images
        except docker.errors.ImageNotFound as e:
            log.append(f"docker: Error response from daemon: manifest unknown: {e.explanation}")
            return acr_runs.FAILED, "failed during run, err: exit status 125", []
        finally:
            for container in containers:
                try:
                    container.remove(force=True)
                except docker.errors.APIError:
                    pass
            network.remove()
            if workspace is not None:
                shutil.rmtree(workspace, ignore_errors=True)

    @staticmethod
    def _workspace(fake: FakeAcr, run: FakeRun) -> str | None:
        """The run's uploaded source, extracted where its `cmd` steps find it (/workspace, readable by any user)."""
        source = run.request.get("sourceLocation")
        if not source or run.kind != "EncodedTaskRunRequest":
            return None
        folder = tempfile.mkdtemp(prefix="acb-workspace-")
        with tarfile.open(fileobj=io.BytesIO(fake.source_bytes(source)), mode="r:gz") as tar:
            tar.extractall(folder, filter="data")
        for path in [folder, *(str(p) for p in Path(folder).rglob("*"))]:
            os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
        return folder

    def _build_step(self, fake: FakeAcr, run: FakeRun, command: str, log: list[str]) -> bool:
        """A `build` step: the agent runs `docker build <command>` through a shell, in the uploaded context."""
        words = shlex.split(command)  # run.task rendered the templating and the aliases
        options: dict[str, Any] = {"args": {}, "labels": {}, "tag": None, "dockerfile": "Dockerfile", "target": None}
        flags = {"-t": "tag", "--tag": "tag", "-f": "dockerfile", "--file": "dockerfile", "--target": "target"}
        while words:
            word = words.pop(0)
            if word in flags:
                options[flags[word]] = words.pop(0)
            elif word in ("--build-arg", "--label"):
                key, _, value = words.pop(0).partition("=")
                options["args" if word == "--build-arg" else "labels"][key] = value
            elif word != ".":
                raise ValueError(f"the fake agent does not know docker build's {word!r}")
        return self._docker_build(fake, run, log, **options)

    def _start(self, step: dict[str, Any], network: str, workspace: str | None = None):
        image, *args = shlex.split(step["cmd"])
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            try:
                self.client.images.pull(image)
            except docker.errors.NotFound as e:
                raise docker.errors.ImageNotFound(str(e.explanation)) from None
        api = self.client.api
        created = api.create_container(
            image, command=args or None, environment=list(step.get("env") or []),
            name=f"acb_step_{step['id']}_{uuid.uuid4().hex[:8]}", detach=True,
            host_config=api.create_host_config(binds={workspace: {"bind": "/workspace", "mode": "ro"}} if workspace
                                               else None),
            networking_config=api.create_networking_config({network: api.create_endpoint_config(
                aliases=[step["id"]])}))
        container = self.client.containers.get(created["Id"])
        container.start()
        return container


def _line(text: str) -> str:
    return f"{dt.datetime.now(dt.UTC):%Y/%m/%d %H:%M:%S} {text}"
