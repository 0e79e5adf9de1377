"""How one release image is built, whichever builder builds it (the Docker engine here, ACR Tasks in Azure).

`plan(Inputs)` reads the checkout's manifest (shared.manifest) and answers with a Plan: what writes the build
context (shared.buildcontext), the Dockerfile's path in it, the build args, the target stage and the labels.
Both builders turn the same Plan into the same image, so the context tar, args and labels never differ
between the local stack and Azure.

    model only  the source's model_api/ around the model; model_api's Dockerfile sets the labels from the args
    score.py    ShipBot's model_api/ around the app's score.py, its requirements on top; the contract label
    own image   the app's context with the model at model_path, the SHIPBOT_* args (a Dockerfile uses those it
                declares) and ShipBot's OCI labels, the smoke contract among them

A release is keyed by (commit, model, recipe): the commit pins shipbot.toml and the Dockerfile, so a commit that
changes either is a new release, and the same inputs delivered again never build twice. The image also
carries the effective manifest's fingerprint (MANIFEST_LABEL: shipbot.toml with its defaults filled in, and
the own image's Dockerfile), so an operator can tell which settings built it.

Before anything is planned the model folder must hold exactly one model file, or an MLflow model, with the
sha256 the release names: building other bytes under its name would break "a release is a pure function of its
inputs".
A bad manifest is a ManifestError (file, key and line); anything else that cannot be built is a BuildFailed.
Reads files; no network.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

from shared import buildcontext, contract, errors, evaluation, manifest, modelfiles

MODEL_API = Path(__file__).resolve().parents[1] / "model_api"  # ShipBot's own, as data: never imported
DOCKERFILE = "model_api/Dockerfile"
SCORE_DOCKERFILE = "shipbot/Dockerfile"
PYFUNC_REQUIREMENTS = "model_api/requirements-pyfunc.txt"  # an MLflow python_function model's, as the image takes them
MANIFEST_LABEL = "dev.shipbot.manifest.sha256"  # the effective manifest (and Dockerfile) that built the image
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


@dataclasses.dataclass(frozen=True)
class Inputs:
    source: Path        # the release's source at its commit
    model_dir: Path     # the model folder: exactly one model file, plus its sample files
    image: str          # repository:tag it is pushed as
    build_id: str
    model_name: str
    model_version: str
    model_sha256: str | None = None  # what the release names; None: whatever the file hashes to
    release_id: str = ""
    commit: str = ""
    source_url: str = ""
    base_image: str = "python:3.11-slim"
    created: str | None = None       # ISO time for the labels; None: now


class Plan(NamedTuple):
    write: Callable[[BinaryIO], None]  # writes the context tar
    dockerfile: str                    # its path in the context
    build_args: dict[str, str]
    target: str | None
    labels: dict[str, str]             # set by the builder (empty: the Dockerfile sets its own)
    model_sha256: str
    shape: manifest.Shape


def plan(inputs: Inputs) -> Plan:
    try:
        sha256 = modelfiles.fingerprint(inputs.model_dir)
        runtimes = modelfiles.runtimes_for(inputs.model_dir)
        if modelfiles.is_mlflow(inputs.model_dir):
            _mlflow_sample(inputs.model_dir)
        extra = {}
        if modelfiles.PYFUNC_RUNTIME in runtimes:
            _same_python(modelfiles.read_mlmodel(inputs.model_dir), inputs.base_image)
            extra = {PYFUNC_REQUIREMENTS: modelfiles.pyfunc_requirements(inputs.model_dir)}
    except ValueError as e:
        raise errors.BuildFailed(f"model {inputs.model_name}/{inputs.model_version}: {e}") from None
    if inputs.model_sha256 is not None and sha256 != inputs.model_sha256:
        raise errors.BuildFailed(f"model {inputs.model_name}/{inputs.model_version} has sha256 {sha256}, the "
                                 f"release expects {inputs.model_sha256}")
    created = inputs.created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    app = manifest.load(inputs.source)
    gate = {evaluation.LABEL: evaluation_label(app, inputs.source)} if app.evaluate is not None else {}
    planned = _plan(inputs, app, sha256, runtimes, created, extra)
    return planned._replace(labels={**planned.labels, **gate}) if gate else planned


def _plan(inputs: Inputs, app: manifest.Manifest, sha256: str, runtimes: tuple[str, ...], created: str,
          extra: dict[str, str]) -> Plan:
    if app.shape == "image":
        return _own_image(inputs, app, sha256, created)
    args = {
        "BASE_IMAGE": inputs.base_image, "MODEL_RUNTIMES": " ".join(runtimes),
        "MODEL_NAME": inputs.model_name, "MODEL_VERSION": inputs.model_version, "MODEL_SHA256": sha256,
        "GIT_COMMIT": inputs.commit, "SOURCE_URL": inputs.source_url, "IMAGE_TAG": inputs.image,
        "BUILD_ID": inputs.build_id, "RELEASE_ID": inputs.release_id, "CREATED": created,
    }
    if app.shape == "model":
        return Plan(lambda out: buildcontext.write(out, source=inputs.source, model=inputs.model_dir, extra=extra),
                    DOCKERFILE, args, None, {}, sha256, app.shape)
    assert app.serve is not None
    requirements = manifest.pip_requirements(inputs.source, app.serve)
    dockerfile = score_dockerfile(app.serve)
    label = smoke_label(app, repo=inputs.source, model_dir=inputs.model_dir)
    return Plan(lambda out: buildcontext.write_score(out, model_api=MODEL_API, app=inputs.source,
                                                     model=inputs.model_dir, dockerfile=dockerfile,
                                                     requirements=requirements, extra=extra),
                SCORE_DOCKERFILE, args, None, {contract.LABEL: label, MANIFEST_LABEL: app.fingerprint(inputs.source)},
                sha256, app.shape)


def _own_image(inputs: Inputs, app: manifest.Manifest, sha256: str, created: str) -> Plan:
    assert app.build is not None
    context_dir = (inputs.source / app.build.context).resolve()
    dockerfile = (inputs.source / app.build.dockerfile).resolve()
    if not dockerfile.is_relative_to(context_dir):
        raise errors.BuildFailed(f"{app.source}: [build] dockerfile {app.build.dockerfile} is outside the context "
                                 f"{app.build.context}; the Docker engine and ACR Tasks need it inside")
    args = {"SHIPBOT_RELEASE_ID": inputs.release_id, "SHIPBOT_GIT_COMMIT": inputs.commit,
            "SHIPBOT_MODEL_NAME": inputs.model_name, "SHIPBOT_MODEL_VERSION": inputs.model_version,
            "SHIPBOT_MODEL_SHA256": sha256}
    labels = {"org.opencontainers.image.revision": inputs.commit,
              "org.opencontainers.image.source": inputs.source_url,
              "org.opencontainers.image.created": created,
              "dev.shipbot.model.name": inputs.model_name, "dev.shipbot.model.version": inputs.model_version,
              "dev.shipbot.model.sha256": sha256, "dev.shipbot.release.id": inputs.release_id,
              "dev.shipbot.build.id": inputs.build_id,
              contract.LABEL: smoke_label(app, repo=inputs.source, model_dir=inputs.model_dir),
              MANIFEST_LABEL: app.fingerprint(inputs.source)}
    model_path = app.build.model_path
    return Plan(lambda out: buildcontext.write_app(out, context=context_dir, model=inputs.model_dir,
                                                   model_path=model_path),
                dockerfile.relative_to(context_dir).as_posix(), args, app.build.target, labels, sha256, app.shape)


def evaluation_label(app: manifest.Manifest, repo: Path) -> str:
    """[evaluate] as the image carries it, with the data file's sha256, once the file is read as an evaluation
    set: a set the gate could not use fails the build, naming the row or the column."""
    spec = app.evaluate
    assert spec is not None
    sha256 = ""  # a set that travels with the model version is read, and checked, when the gate runs
    if not spec.data.startswith(evaluation.WITH_MODEL):
        try:
            sha256 = evaluation.read((repo / spec.data).read_bytes(), spec.label).sha256
        except evaluation.DataError as e:
            raise errors.BuildFailed(f"{app.source}: [evaluate] data {spec.data}: {e}") from None
    return evaluation.Spec.declared(spec, sha256=sha256).to_label()


def _mlflow_sample(model_dir: Path) -> None:
    """An MLflow model carries no sample files: its input example becomes sample-request.json (model_api's
    warm-up, and the request of the smoke test and every check), unless the folder has one. With no
    sample-response.json the checks ask for an answer with one prediction per row, not for given figures."""
    target = model_dir / "sample-request.json"
    if target.exists():
        return
    request = modelfiles.example_request(model_dir, modelfiles.read_mlmodel(model_dir))
    if request is None:
        raise ValueError("the MLflow model has no input example of numeric rows to smoke-test it with (log it "
                         "with input_example=..., or add a sample-request.json to the version)")
    target.write_text(json.dumps(request), encoding="utf-8")


def _same_python(mlmodel: dict, base_image: str) -> None:
    """A python_function model is cloudpickled: it loads under the Python (major.minor) it was saved with only.
    Checked when the base image's tag says its Python (python:3.11-slim); ValueError before a build that would
    fail at load."""
    saved = modelfiles.python_version(mlmodel)
    base = re.search(r"(?:^|/)python:(\d+\.\d+)", base_image)
    if saved and base and saved != base[1]:
        raise ValueError(f"the python_function model was saved with Python {saved}, and the image's base is "
                         f"{base_image} (Python {base[1]}): it would not load there")


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

    assert smoke.port is not None and smoke.ready_path is not None  # the manifest's effective defaults
    text = contract.Contract(
        port=smoke.port, ready_path=smoke.ready_path, identity_path=smoke.identity_path,
        score_path=smoke.score_path, request=sample(smoke.request, "request"), expect_status=smoke.expect_status,
        expect_json=sample(smoke.expect_json, "expect_json") if smoke.expect_json else None,
        tolerance=smoke.tolerance, expect_keys=tuple(smoke.expect_keys), ready_seconds=smoke.ready_seconds,
        request_seconds=smoke.request_seconds).label()
    if len(text) > contract.MAX_LABEL_BYTES:
        raise errors.BuildFailed(f"{app.source}: the sample request and answer take {len(text)} bytes; the "
                                 f"image label that carries them holds {contract.MAX_LABEL_BYTES}")
    return text
