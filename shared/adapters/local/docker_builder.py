"""DockerBuilder: builds a release image on the local Docker engine and pushes it to the local registry.
It stands where ACR Tasks stands in Azure: same Dockerfile, same build context, same build args and labels.

Two faces. `build(BuildRequest)` builds and pushes synchronously (bench/ and the image tests use it).
`begin_build(ports.BuildRequest, source, models)` is the ports.Builder face: it returns a build id at once and
builds in a background thread, one build at a time, like a remote build service; the registry's push
notification continues the chain, `get_build` tells how a build went (UNKNOWN for ids this process never
started: a restarted local host forgets its builds, as an expired ACR run would be forgotten).

What is built comes from shared.buildplan (the manifest's shape: model only, score.py or the app's own
Dockerfile), as AcrTasksBuilder's does. Docker SDK errors become shared.errors: a failed build is a BuildFailed (retrying
the same inputs will fail again), an engine or registry that does not answer is a TransientError. Fetching
the inputs and pushing the image retry a TransientError (tenacity, backoff up to 5 s) for `retry_seconds`:
a registry or storage account that is down for a moment delays a build, it does not fail it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker
import docker.errors
import tenacity

from shared import buildplan, errors, ports

LOG_TAIL_LINES = 30
LAST_LINES_IN_ERROR = 5
DOCKERFILE = buildplan.DOCKERFILE
KEPT_BUILDS = 200  # finished builds remembered for get_build; older ones read as UNKNOWN
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    source: Path
    """The release's source at its commit: an app with its own Dockerfile (shipbot.toml [build], or a
    Dockerfile at its root), or a tree holding model_api/."""
    model_dir: Path
    """The model folder: exactly one model file, plus sample-request.json and sample-response.json."""
    repository: str
    """Where to push, e.g. 127.0.0.1:5000/model-api."""
    tag: str
    model_name: str
    model_version: str
    git_commit: str | None = None
    source_url: str | None = None
    release_id: str | None = None


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    repository: str
    tag: str
    digest: str
    build_id: str
    model_sha256: str
    build_seconds: float
    push_seconds: float

    @property
    def ref(self) -> str:
        """What environments run: repository@sha256:..., never the mutable tag."""
        return f"{self.repository}@{self.digest}"


class DockerBuilder:
    def __init__(self, *, client: docker.DockerClient, base_image: str = "python:3.11-slim",
                 use_cache: bool = True, log_dir: Path | None = None, retry_seconds: float = 120.0,
                 sleep=time.sleep) -> None:
        """`log_dir`, when given, keeps each background build's log tail as `<build id>.log` and get_build's
        log_url points at it."""
        self.client = client
        self.retry_seconds, self._sleep = retry_seconds, sleep
        self.base_image = base_image
        self.use_cache = use_cache
        self.log_dir = log_dir
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._builds: collections.OrderedDict[str, ports.Build] = collections.OrderedDict()
        self._futures: dict[str, concurrent.futures.Future[None]] = {}
        self._log_tails: dict[str, str] = {}

    @property
    def recipe(self) -> str:
        """What besides commit and model decides the image bytes: part of the release key, so stable."""
        return f"docker:{self.base_image}:{DOCKERFILE}"

    # -- ports.Builder: asynchronous, like ACR Tasks ----------------------------------------------------------
    def begin_build(self, request: ports.BuildRequest, source: ports.Source, models: ports.Models) -> str:
        build_id = _new_build_id()
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                                       thread_name_prefix="docker-builder")
            self._remember(ports.Build(build_id, ports.BuildState.RUNNING))
            self._futures[build_id] = self._executor.submit(self._run, build_id, request, source, models)
        return build_id

    def get_build(self, build_id: str) -> ports.Build:
        with self._lock:
            return self._builds.get(build_id) or ports.Build(build_id, ports.BuildState.UNKNOWN)

    def log_tail(self, build_id: str) -> str:
        """The last lines of a failed build's log ("" when there is none)."""
        with self._lock:
            return self._log_tails.get(build_id, "")

    def wait(self, build_id: str, *, timeout: float) -> ports.Build:
        """Blocks until the build is over or `timeout` seconds passed, then answers as get_build does."""
        with self._lock:
            future = self._futures.get(build_id)
        if future is not None:
            concurrent.futures.wait([future], timeout=timeout)
        return self.get_build(build_id)

    def close(self, *, wait: bool = True) -> None:
        """Stops taking builds; `wait` lets the running one finish."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def _run(self, build_id: str, request: ports.BuildRequest, source: ports.Source, models: ports.Models) -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="shipbot-build-") as tmp:
                started = time.perf_counter()
                tree, model_dir = Path(tmp, "source"), Path(tmp, "model")
                tree.mkdir()
                model_dir.mkdir()
                self._retrying("fetching the source", lambda: source.archive(request.commit, tree))
                self._retrying("fetching the model", lambda: models.download(request.model, model_dir))
                fetch_seconds = time.perf_counter() - started
                built = self.build(BuildRequest(
                    source=tree, model_dir=model_dir, repository=request.repository, tag=request.tag,
                    model_name=request.model.name, model_version=request.model.version, git_commit=request.commit,
                    source_url=request.source_url, release_id=request.release_id,
                ), build_id=build_id, model_sha256=request.model.sha256)
            outcome = ports.Build(build_id, ports.BuildState.SUCCEEDED, digest=built.digest, steps=(
                ("fetch", round(fetch_seconds, 3)), ("build", round(built.build_seconds, 3)),
                ("push", round(built.push_seconds, 3))))
            log.info("build succeeded", extra={"build_id": build_id, "release_id": request.release_id,
                                               "digest": built.digest, "seconds": built.build_seconds})
        except Exception as e:  # a background build reports every failure through get_build
            tail = e.log_tail if isinstance(e, errors.BuildFailed) else ""
            error = str(e) if isinstance(e, errors.ReleaseError) else f"{type(e).__name__}: {e}"
            last = [line.strip() for line in tail.splitlines() if line.strip()][-LAST_LINES_IN_ERROR:]
            if last:  # the release's reason says what broke, not only that something did
                error = f"{error}; the build log ends: {' | '.join(last)}"
            if not isinstance(e, errors.ReleaseError):
                log.exception("build crashed", extra={"build_id": build_id, "release_id": request.release_id})
            if len(error) > 1000:  # keep what failed (the head) and how the log ends (the tail)
                error = f"{error[:400]} … {error[-590:]}"
            outcome = ports.Build(build_id, ports.BuildState.FAILED, error=error,
                                  log_url=self._write_log(build_id, f"{error}\n{tail}"))
            with self._lock:
                self._log_tails[build_id] = tail
            log.warning("build failed", extra={"build_id": build_id, "release_id": request.release_id,
                                               "error": error[:500]})
        with self._lock:
            self._remember(outcome)
            self._futures.pop(build_id, None)

    def _remember(self, build: ports.Build) -> None:
        self._builds[build.build_id] = build
        self._builds.move_to_end(build.build_id)
        finished = [b for b, kept in self._builds.items() if kept.state is not ports.BuildState.RUNNING]
        for old in finished[: max(0, len(self._builds) - KEPT_BUILDS)]:
            del self._builds[old]
            self._log_tails.pop(old, None)

    def _write_log(self, build_id: str, text: str) -> str:
        if self.log_dir is None:
            return ""
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            path = self.log_dir / f"{build_id}.log"
            path.write_text(text)
            return path.resolve().as_uri()
        except OSError:
            log.warning("could not keep the build log", extra={"build_id": build_id}, exc_info=True)
            return ""

    # -- synchronous ------------------------------------------------------------------------------------------
    def build(self, request: BuildRequest, *, build_id: str | None = None,
              model_sha256: str | None = None) -> BuiltImage:
        """Builds and pushes. `model_sha256`, when given, must match the model file (a release names its model
        by hash: building another file under its name would break "a release is a pure function")."""
        build_id = build_id or _new_build_id()
        image = f"{request.repository}:{request.tag}"
        plan = buildplan.plan(buildplan.Inputs(  # a ManifestError fails the build with file, key and line
            source=request.source, model_dir=request.model_dir, image=image, build_id=build_id,
            model_name=request.model_name, model_version=request.model_version, model_sha256=model_sha256,
            release_id=request.release_id or "", commit=request.git_commit or "", source_url=request.source_url or "",
            base_image=self.base_image))
        started = time.perf_counter()
        with tempfile.TemporaryFile() as context:
            plan.write(context)
            context.seek(0)
            self._build(context, image, plan.build_args, dockerfile=plan.dockerfile, target=plan.target,
                        labels=plan.labels)
        built = time.perf_counter()
        digest = self._retrying(f"pushing {image}", lambda: self._push(request.repository, request.tag))
        return BuiltImage(repository=request.repository, tag=request.tag, digest=digest, build_id=build_id,
                          model_sha256=plan.model_sha256, build_seconds=built - started,
                          push_seconds=time.perf_counter() - built)

    def _retrying(self, what: str, call):
        """`call()`, again after a TransientError until `retry_seconds` have passed (then that error)."""
        def note(state: tenacity.RetryCallState) -> None:
            log.warning("%s failed (%s); retrying in %.1f s", what, state.outcome.exception(),
                        state.next_action.sleep if state.next_action else 0)

        return tenacity.Retrying(
            stop=tenacity.stop_after_delay(self.retry_seconds),
            wait=tenacity.wait_exponential(multiplier=0.5, max=5.0) + tenacity.wait_random(0, 0.5),
            retry=tenacity.retry_if_exception_type(errors.TransientError), sleep=self._sleep, reraise=True,
            before_sleep=note)(call)

    def _build(self, context: object, image: str, build_args: dict[str, str], *, dockerfile: str = DOCKERFILE,
               target: str | None = None, labels: dict[str, str] | None = None) -> None:
        try:
            self.client.images.build(fileobj=context, custom_context=True, dockerfile=dockerfile,
                                     tag=image, buildargs=build_args, rm=True, forcerm=True,
                                     nocache=not self.use_cache, target=target, labels=labels)
        except docker.errors.BuildError as e:
            lines = [chunk.get("stream", "") or chunk.get("error", "") for chunk in e.build_log]
            tail = "".join(lines).splitlines()[-LOG_TAIL_LINES:]
            raise errors.BuildFailed(f"docker build of {image} failed: {e.msg}", "\n".join(tail)) from None
        except docker.errors.APIError as e:
            raise errors.TransientError(f"Docker engine error while building {image}: {e.explanation}") from None

    def _push(self, repository: str, tag: str) -> str:
        digest = None
        try:
            for event in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise errors.TransientError(f"push of {repository}:{tag} failed: {event['error']}")
                digest = event.get("aux", {}).get("Digest", digest)
        except docker.errors.APIError as e:
            raise errors.TransientError(f"push of {repository}:{tag} failed: {e.explanation}") from None
        if not digest:
            raise errors.TransientError(f"push of {repository}:{tag} reported no digest")
        return digest


def _new_build_id() -> str:
    return f"local-{uuid.uuid4().hex[:12]}"
