"""DockerBuilder: builds a release image on the local Docker engine and pushes it to the local registry.
It stands where ACR Tasks stands in Azure: same Dockerfile, same build context, same build args and labels.

The build context comes from shared.buildcontext; the image gets only the model runtime its model file
needs (MODEL_RUNTIMES). Docker SDK errors become shared.errors: a failed build is a BuildFailed (retrying
the same inputs will fail again), an engine or registry that does not answer is a TransientError.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path

import docker
import docker.errors

from model_api import runtimes
from shared import buildcontext, errors

LOG_TAIL_LINES = 30


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    source: Path
    """A tree holding model_api/ (the release's source at its commit)."""
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
                 use_cache: bool = True) -> None:
        self.client = client
        self.base_image = base_image
        self.use_cache = use_cache

    def build(self, request: BuildRequest) -> BuiltImage:
        found = runtimes.model_files(request.model_dir)
        if len(found) != 1:
            raise errors.BuildFailed(f"the model folder must hold exactly one model file; found {len(found)}")
        model_sha256 = buildcontext.sha256_file(found[0])
        build_id = f"local-{uuid.uuid4().hex[:12]}"
        image = f"{request.repository}:{request.tag}"
        build_args = {
            "BASE_IMAGE": self.base_image,
            "MODEL_RUNTIMES": " ".join(runtimes.for_model_dir(request.model_dir)),
            "MODEL_NAME": request.model_name, "MODEL_VERSION": request.model_version,
            "MODEL_SHA256": model_sha256, "GIT_COMMIT": request.git_commit or "",
            "SOURCE_URL": request.source_url or "", "IMAGE_TAG": image, "BUILD_ID": build_id,
            "RELEASE_ID": request.release_id or "",
            "CREATED": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        started = time.perf_counter()
        with tempfile.TemporaryFile() as context:
            buildcontext.write(context, source=request.source, model=request.model_dir)
            context.seek(0)
            self._build(context, image, build_args)
        built = time.perf_counter()
        digest = self._push(request.repository, request.tag)
        return BuiltImage(repository=request.repository, tag=request.tag, digest=digest, build_id=build_id,
                          model_sha256=model_sha256, build_seconds=built - started,
                          push_seconds=time.perf_counter() - built)

    def _build(self, context: object, image: str, build_args: dict[str, str]) -> None:
        try:
            self.client.images.build(fileobj=context, custom_context=True, dockerfile="model_api/Dockerfile",
                                     tag=image, buildargs=build_args, rm=True, forcerm=True,
                                     nocache=not self.use_cache)
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
