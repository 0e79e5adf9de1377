"""DockerBuilder: builds a release image on the local Docker engine and pushes it to the local registry.
It stands where ACR Tasks stands in Azure: same Dockerfile, same build context, same build args and labels.

Two faces. `build(BuildRequest)` builds and pushes synchronously (bench/ and the image tests use it).
`begin_build(ports.BuildRequest, source, models)` is the ports.Builder face: it returns a build id at once and
builds in a background thread, one build at a time, like a remote build service; the registry's push
notification continues the chain, `get_build` tells how a build went (UNKNOWN for ids this process never
started: a restarted local host forgets its builds, as an expired ACR run would be forgotten).

The build context comes from shared.buildcontext; the image gets only the model runtime its model file
needs (MODEL_RUNTIMES). Docker SDK errors become shared.errors: a failed build is a BuildFailed (retrying
the same inputs will fail again), an engine or registry that does not answer is a TransientError. Fetching
the inputs and pushing the image retry a TransientError (tenacity, backoff up to 5 s) for `retry_seconds`:
a registry or storage account that is down for a moment delays a build, it does not fail it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

import docker
import docker.errors
import tenacity

from shared import buildcontext, errors, manifest, modelfiles, ports
from shared.adapters.local.containers import CONTRACT_LABEL

LOG_TAIL_LINES = 30
MODEL_API = Path(__file__).resolve().parents[3] / "model_api"  # ShipBot's own, as data: never imported
SCORE_DOCKERFILE = "shipbot/Dockerfile"
# What goes on top of model_api's Dockerfile for a score.py app: its requirements, its tree, its entry script.
SCORE_LAYERS = """
# -- shipbot.toml [serve]: the app's score.py, served by model_api ----------------------------------------------
USER root
COPY shipbot/app-requirements.txt /tmp/app-requirements.txt
RUN if [ -s /tmp/app-requirements.txt ]; then pip install --no-cache-dir -r /tmp/app-requirements.txt; fi
COPY app/ /var/azureml-app/app/
ENV AZUREML_ENTRY_SCRIPT=/var/azureml-app/app/{entry_script}
USER model-api
"""
MAX_CONTRACT_BYTES = 256 << 10
LAST_LINES_IN_ERROR = 5
DOCKERFILE = "model_api/Dockerfile"
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
        found = modelfiles.model_files(request.model_dir)
        if len(found) != 1:
            raise errors.BuildFailed(f"the model folder must hold exactly one model file; found {len(found)}")
        actual_sha256 = buildcontext.sha256_file(found[0])
        if model_sha256 is not None and actual_sha256 != model_sha256:
            raise errors.BuildFailed(f"the model file {found[0].name} has sha256 {actual_sha256}, the release "
                                     f"expects {model_sha256}")
        model_sha256 = actual_sha256
        build_id = build_id or _new_build_id()
        image = f"{request.repository}:{request.tag}"
        app = manifest.load(request.source)  # a ManifestError fails the build with file, key and line
        plan = (self._plan_app if app.shape == "image" else self._plan_model_api)(
            request, app, image=image, build_id=build_id, model_sha256=model_sha256)
        started = time.perf_counter()
        with tempfile.TemporaryFile() as context:
            plan.write(context)
            context.seek(0)
            self._build(context, image, plan.build_args, dockerfile=plan.dockerfile, target=plan.target,
                        labels=plan.labels)
        built = time.perf_counter()
        digest = self._retrying(f"pushing {image}", lambda: self._push(request.repository, request.tag))
        return BuiltImage(repository=request.repository, tag=request.tag, digest=digest, build_id=build_id,
                          model_sha256=model_sha256, build_seconds=built - started,
                          push_seconds=time.perf_counter() - built)

    def _plan_model_api(self, request: BuildRequest, app: manifest.Manifest, *, image: str, build_id: str,
                        model_sha256: str) -> _Plan:
        """model_api around the model (the source's model_api/), or ShipBot's own around a score.py app."""
        build_args = {
            "BASE_IMAGE": self.base_image,
            "MODEL_RUNTIMES": " ".join(modelfiles.runtimes_for(request.model_dir)),
            "MODEL_NAME": request.model_name, "MODEL_VERSION": request.model_version,
            "MODEL_SHA256": model_sha256, "GIT_COMMIT": request.git_commit or "",
            "SOURCE_URL": request.source_url or "", "IMAGE_TAG": image, "BUILD_ID": build_id,
            "RELEASE_ID": request.release_id or "",
            "CREATED": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        if app.shape == "score":
            assert app.serve is not None
            requirements = manifest.pip_requirements(request.source, app.serve)
            dockerfile_text = score_dockerfile(app.serve)
            return _Plan(lambda out: buildcontext.write_score(
                out, model_api=MODEL_API, app=request.source, model=request.model_dir, dockerfile=dockerfile_text,
                requirements=requirements), SCORE_DOCKERFILE, build_args)
        return _Plan(lambda out: buildcontext.write(out, source=request.source, model=request.model_dir),
                     DOCKERFILE, build_args)

    def _plan_app(self, request: BuildRequest, app: manifest.Manifest, *, image: str, build_id: str,
                  model_sha256: str) -> _Plan:
        """An app with its own Dockerfile: its context with the model at model_path, the SHIPBOT_* build args
        (a Dockerfile uses those it declares) and ShipBot's OCI labels on the image."""
        assert app.build is not None
        context_dir = (request.source / app.build.context).resolve()
        dockerfile = (request.source / app.build.dockerfile).resolve()
        if not dockerfile.is_relative_to(context_dir):
            raise errors.BuildFailed(f"{app.source}: [build] dockerfile {app.build.dockerfile} is outside the "
                                     f"context {app.build.context}; the Docker engine and ACR Tasks need it inside")
        build_args = {"SHIPBOT_RELEASE_ID": request.release_id or "", "SHIPBOT_GIT_COMMIT": request.git_commit or "",
                      "SHIPBOT_MODEL_NAME": request.model_name, "SHIPBOT_MODEL_VERSION": request.model_version,
                      "SHIPBOT_MODEL_SHA256": model_sha256}
        labels = {"org.opencontainers.image.revision": request.git_commit or "",
                  "org.opencontainers.image.source": request.source_url or "",
                  "org.opencontainers.image.created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  "dev.shipbot.model.name": request.model_name, "dev.shipbot.model.version": request.model_version,
                  "dev.shipbot.model.sha256": model_sha256, "dev.shipbot.release.id": request.release_id or "",
                  "dev.shipbot.build.id": build_id,
                  CONTRACT_LABEL: smoke_label(app, repo=request.source, model_dir=request.model_dir)}
        model_path = app.build.model_path
        return _Plan(lambda out: buildcontext.write_app(out, context=context_dir, model=request.model_dir,
                                                        model_path=model_path),
                     dockerfile.relative_to(context_dir).as_posix(), build_args, app.build.target, labels)

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


class _Plan(NamedTuple):
    """How one image is built: what writes its context, its Dockerfile in it, args, target and labels."""

    write: Callable[[BinaryIO], None]
    dockerfile: str
    build_args: dict[str, str]
    target: str | None = None
    labels: dict[str, str] | None = None


def score_dockerfile(serve: manifest.Serve) -> str:
    """model_api's Dockerfile with the layers of a score.py app on top."""
    return (MODEL_API / "Dockerfile").read_text() + SCORE_LAYERS.format(entry_script=serve.entry_script)


def smoke_label(app: manifest.Manifest, *, repo: Path, model_dir: Path) -> str:
    """The image's smoke contract, as its label: [smoke] with the sample request and the expected answer
    inline, so the smoke test and every rollout check need nothing but the image."""
    smoke = app.smoke

    def sample(name: str, key: str) -> object:
        for folder in (repo, model_dir):  # the repository's file first, then the model's
            path = folder / name
            if path.is_file() and not path.is_symlink():
                try:
                    return json.loads(path.read_text(encoding="utf-8"))
                except ValueError as e:
                    raise errors.BuildFailed(f"{app.source}: [smoke] {key} {name} is not JSON: {e}") from None
        raise errors.BuildFailed(f"{app.source}: [smoke] {key} {name} is neither in the repository nor in the "
                                 "model's folder")

    doc = {"port": smoke.port, "ready_path": smoke.ready_path, "identity_path": smoke.identity_path,
           "score_path": smoke.score_path, "request": sample(smoke.request, "request"),
           "expect_status": smoke.expect_status, "tolerance": smoke.tolerance, "expect_keys": smoke.expect_keys,
           "expect_json": sample(smoke.expect_json, "expect_json") if smoke.expect_json else None}
    text = json.dumps(doc, separators=(",", ":"))
    if len(text) > MAX_CONTRACT_BYTES:
        raise errors.BuildFailed(f"{app.source}: the sample request and answer take {len(text)} bytes; the "
                                 f"image label that carries them holds {MAX_CONTRACT_BYTES}")
    return text


def _new_build_id() -> str:
    return f"local-{uuid.uuid4().hex[:12]}"
