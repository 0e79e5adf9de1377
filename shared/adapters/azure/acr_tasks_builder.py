"""AcrTasksBuilder: builds a release image with ACR Tasks (ports.Builder), where DockerBuilder builds on the local
engine: the same plan (shared.buildplan: the manifest's shape, model only, score.py or the app's own
Dockerfile), so the same context tar, Dockerfile, target, build args and labels; ACR builds it and pushes it to
its own registry, whose ImagePushed event continues the chain.

begin_build fetches the source and the model into a temp folder, writes the plan's context as a tar.gz to a
temp file (streamed: memory does not grow with the model), asks ARM for a build-source upload URL, streams the
file there in blocks and schedules the build: a DockerBuildRequest when the Dockerfile sets its own labels
(model_api's), else an EncodedTaskRunRequest on the same uploaded context whose `build` step is the docker
build command line with `--label` (a DockerBuildRequest has no labels) and whose `push` step pushes it
(task_yaml). It returns the run id ACR gave. Nothing is kept in memory: get_build
asks ARM about the run, so any instance of the Function App can answer for it.

    Queued/Started/Running   RUNNING; FAILED once it is older than the run timeout plus `queue_seconds`
                             (ACR should have timed it out; the run is cancelled, best effort)
    Succeeded                SUCCEEDED with the digest of the run's outputImages
    Failed/Error/Canceled    FAILED: ACR's error and the last lines of the run's log, and the log's link
    Timeout                  FAILED: "timed out after <timeout> s"
    no such run (404)        UNKNOWN

The log link in a Build is the log blob's URL without its SAS query (a secret): enough to name the log, not to
read it; `az acr task logs --registry <name> --run-id <id>` reads it, and the error says so.

A build that cannot be started for reasons that retrying will not fix (the commit or the model is gone, the
model file does not match the release's sha256, there is not exactly one model file, a bad shipbot.toml, the
repository is not in this registry) gets an id
`rejected-<hex>` and reads FAILED with that reason in this process (UNKNOWN in another, which the engine also
records as a failed build), as DockerBuilder reports its failures through get_build. ARM or storage that does
not answer is a TransientError from begin_build.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import gzip
import json
import logging
import shlex
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared import buildplan, errors, ports
from shared.adapters.azure import acr_runs

DOCKERFILE = buildplan.DOCKERFILE
KEPT_REJECTIONS = 200
log = logging.getLogger(__name__)


class AcrTasksBuilder:
    def __init__(self, *, client: Any, resource_group: str, registry_name: str, login_server: str,
                 base_image: str = "python:3.11-slim", timeout_seconds: int = 3600, queue_seconds: float = 1800.0,
                 cpu: int = 2, blob_options: dict[str, Any] | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        """`client`: a ContainerRegistryTasksMgmtClient (acr_runs.tasks_client). `login_server`: the registry's
        host, e.g. myacr.azurecr.io; requests' repositories start with it. `timeout_seconds`: ACR's run timeout
        (300..28800). `queue_seconds`: how much longer than that a run may stay unfinished (queued behind
        others) before get_build calls it failed. `blob_options` go to the blob client of the upload."""
        if not 300 <= timeout_seconds <= 28800:
            raise errors.PermanentError("the ACR Tasks run timeout must be 300..28800 seconds")
        self.client = client
        self.resource_group = resource_group
        self.registry_name = registry_name
        self.login_server = login_server.rstrip("/")
        self.base_image = base_image
        self.timeout_seconds = int(timeout_seconds)
        self.queue_seconds = queue_seconds
        self.cpu = cpu
        self.blob_options = dict(blob_options or {})
        self.clock = clock
        self._lock = threading.Lock()
        self._rejected: collections.OrderedDict[str, str] = collections.OrderedDict()

    @property
    def recipe(self) -> str:
        """What besides commit and model decides the image bytes: part of the release key, so stable."""
        return f"acr-tasks:{self.base_image}:{DOCKERFILE}"

    # -- ports.Builder -----------------------------------------------------------------------------------------
    def begin_build(self, request: ports.BuildRequest, source: ports.Source, models: ports.Models) -> str:
        prefix = f"{self.login_server}/"
        if not request.repository.startswith(prefix):
            return self._reject(f"repository {request.repository} is not in registry {self.login_server}")
        image_name = f"{request.repository[len(prefix):]}:{request.tag}"
        build_id = f"acr-{uuid.uuid4().hex[:12]}"  # ACR's run id is known only once scheduled
        with tempfile.TemporaryDirectory(prefix="shipbot-acr-build-") as tmp:
            tree, model_dir, context = Path(tmp, "source"), Path(tmp, "model"), Path(tmp, "context.tar.gz")
            tree.mkdir()
            model_dir.mkdir()
            try:
                source.archive(request.commit, tree)
                models.download(request.model, model_dir)
                plan = buildplan.plan(buildplan.Inputs(
                    source=tree, model_dir=model_dir, image=f"{request.repository}:{request.tag}", build_id=build_id,
                    model_name=request.model.name, model_version=request.model.version,
                    model_sha256=request.model.sha256, release_id=request.release_id or "",
                    commit=request.commit or "", source_url=request.source_url or "", base_image=self.base_image))
            except (errors.NotFound, errors.PermanentError) as e:  # a TransientError is raised: try again
                return self._reject(str(e))
            write_context(context, plan)
            relative_path = self._upload(context)
        run = self._schedule(image_name, relative_path, plan)
        log.info("build scheduled", extra={"build_id": run, "release_id": request.release_id, "image": image_name,
                                           "shipbot_build_id": build_id, "shape": plan.shape})
        return run

    def get_build(self, build_id: str) -> ports.Build:
        with self._lock:
            rejected = self._rejected.get(build_id)
        if rejected is not None:
            return ports.Build(build_id, ports.BuildState.FAILED, error=rejected[:500])
        try:
            run = self.client.runs.get(self.resource_group, self.registry_name, build_id)
        except ResourceNotFoundError:
            return ports.Build(build_id, ports.BuildState.UNKNOWN)
        except AzureError as e:
            raise acr_runs.translate(e, f"reading run {build_id}") from None
        status, steps = acr_runs.status_of(run), _steps(run)
        if status in acr_runs.IN_FLIGHT:
            limit = self.timeout_seconds + self.queue_seconds
            created = getattr(run, "create_time", None)
            if created is None or (self.clock() - created).total_seconds() <= limit:
                return ports.Build(build_id, ports.BuildState.RUNNING, steps=steps)
            self._cancel(build_id)
            return self._failed(build_id, f"run {build_id} was still {status} {limit:g} s after it was queued "
                                          "(cancelled)", steps)
        if status == acr_runs.SUCCEEDED:
            digest = next((image.digest for image in (getattr(run, "output_images", None) or [])
                           if getattr(image, "digest", None)), None)
            if digest:
                return ports.Build(build_id, ports.BuildState.SUCCEEDED, digest=digest, steps=steps)
            return self._failed(build_id, f"run {build_id} succeeded but reported no image", steps)
        if status == acr_runs.TIMEOUT:
            reason = f"run {build_id} timed out after {self.timeout_seconds} s"
        else:
            message = " ".join(str(getattr(run, "run_error_message", None) or "").split())
            reason = f"run {build_id} {status.lower() or 'ended'}" + (f": {message[:200]}" if message else "")
        return self._failed(build_id, reason, steps)

    # -- steps ------------------------------------------------------------------------------------------------
    def _upload(self, context: Path) -> str:
        """Streams the context file to the registry's build-source upload URL; returns its relative path."""
        return acr_runs.upload_source(self.client, self.resource_group, self.registry_name, context,
                                      what="the build context", **self.blob_options)

    def _schedule(self, image_name: str, relative_path: str, plan: buildplan.Plan) -> str:
        from azure.mgmt.containerregistrytasks import models

        common = {"source_location": relative_path, "timeout": self.timeout_seconds,
                  "platform": models.PlatformProperties(**acr_runs.PLATFORM),
                  "agent_configuration": models.AgentProperties(cpu=self.cpu), "is_archive_enabled": False}
        if plan.labels:  # a DockerBuildRequest cannot set labels: a build step and a push step can
            request: Any = models.EncodedTaskRunRequest(
                encoded_task_content=base64.b64encode(self.task_yaml(image_name, plan).encode()).decode("ascii"),
                values_property=[], **common)
        else:
            request = models.DockerBuildRequest(
                docker_file_path=plan.dockerfile, target=plan.target, image_names=[image_name], is_push_enabled=True,
                no_cache=False, arguments=[models.Argument(name=k, value=v, is_secret=False)
                                           for k, v in plan.build_args.items()], **common)
        try:
            run = self.client.registries.schedule_run(self.resource_group, self.registry_name, request)
        except AzureError as e:
            raise acr_runs.translate(e, f"scheduling the build of {image_name}") from None
        if not getattr(run, "run_id", None):
            raise errors.TransientError(f"ACR Tasks scheduled the build of {image_name} but gave no run id")
        return run.run_id

    def task_yaml(self, image_name: str, plan: buildplan.Plan) -> str:
        """The multi-step task that builds a plan with labels: `docker build` as the agent runs it (a shell
        command line, so every word is quoted), then the push. The agent renders the file's raw text before it
        reads the YAML (Go templating, then v1.1.0's `$` aliases): _raw keeps both off our values."""
        image = f"{self.login_server}/{image_name}"
        words = ["-t", image, "-f", plan.dockerfile]
        words += ["--target", plan.target] if plan.target else []
        for key, value in plan.build_args.items():
            words += ["--build-arg", f"{key}={value}"]
        for key, value in plan.labels.items():
            words += ["--label", f"{key}={value}"]
        return "\n".join([
            "version: v1.1.0",
            f"stepTimeout: {self.timeout_seconds}",
            "steps:",
            "  - id: build",
            f"    build: {_raw(json.dumps(shlex.join([*words, '.'])))}",
            "  - id: push",
            f"    push: [{_raw(json.dumps(image))}]",
            "",
        ])

    def _failed(self, build_id: str, reason: str, steps: tuple[tuple[str, float], ...]) -> ports.Build:
        link = ""
        tail = ""
        try:
            link = acr_runs.log_link(self.client, self.resource_group, self.registry_name, build_id)
            tail = acr_runs.last_lines(acr_runs.read_log_tail(link, **self.blob_options))
        except errors.ReleaseError:  # the verdict stands without the log
            log.warning("could not read the log of run %s", build_id)
        how = f"az acr task logs --registry {self.registry_name} --run-id {build_id}"
        error = f"{reason}; log: {tail}" if tail else reason
        error = error if len(error) <= 480 - len(how) else error[: 477 - len(how)] + "..."
        return ports.Build(build_id, ports.BuildState.FAILED, error=f"{error} ({how})",
                           log_url=acr_runs.without_query(link), steps=steps)

    def _cancel(self, run_id: str) -> None:
        try:
            self.client.runs.cancel(self.resource_group, self.registry_name, run_id)
        except AzureError:
            log.warning("could not cancel run %s", run_id, exc_info=True)

    def _reject(self, reason: str) -> str:
        build_id = f"rejected-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._rejected[build_id] = reason
            while len(self._rejected) > KEPT_REJECTIONS:
                self._rejected.popitem(last=False)
        log.warning("build rejected", extra={"build_id": build_id, "error": reason[:500]})
        return build_id


def write_context(path: Path, plan: buildplan.Plan) -> None:
    """The plan's context tar, gzipped into `path` as it is written (ACR Tasks takes a tar.gz). mtime=0 keeps
    the bytes a function of the content."""
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:
        plan.write(gz)


def _raw(text: str) -> str:
    """`text` as ACR's agent renders it back: `{{` as Go's raw string {{`{{`}}, `$` as `$$`."""
    return text.replace("$", "$$").replace("{{", "{{`{{`}}")


def _steps(run: Any) -> tuple[tuple[str, float], ...]:
    created, started, finished = (getattr(run, name, None) for name in ("create_time", "start_time", "finish_time"))
    steps = [("queue", acr_runs.seconds_between(created, started)), ("build", acr_runs.seconds_between(started, finished))]
    return tuple((name, seconds) for name, seconds in steps if seconds is not None)
