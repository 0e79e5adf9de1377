"""The build context of a release image, the same for every builder (Docker engine here, ACR Tasks in Azure).

`write` (model only): ShipBot's scoring service around the model,

    model_api/    the scoring service, from the release's source (and, for an MLflow python_function model, the
                  requirements-pyfunc.txt made of the model's requirements)
    model/        the model folder: model file, sample-request.json, sample-response.json

`write_score` (shipbot.toml [serve]): ShipBot's model_api/ around the app's score.py, which goes in as app/
with its requirements installed on top, as Azure ML serves an entry script.

`write_app` (an app with its own Dockerfile, shipbot.toml [build]): the app's context folder as the
repository holds it, with the model version's folder at its `model_path` (replacing what the repository
has there), so the app's Dockerfile COPYs it like any other file.

Written as a plain tar with normalised owners, modes and times, so that the engine's layer cache keys on
content alone: a new model leaves the dependency and code layers cached. Files are streamed, never read
whole into memory.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from shared import modelfiles

SKIP = {"__pycache__", ".pytest_cache", ".git"}


def write(out: BinaryIO, *, source: Path, model: Path, extra: dict[str, str] | None = None) -> None:
    """Write the context tar for source (a tree holding model_api/) and model (a folder) to out; `extra`:
    files ShipBot generated, by their path in the context."""
    if not (source / "model_api" / "Dockerfile").is_file():
        raise FileNotFoundError(f"{source} has no model_api/Dockerfile")
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, source / "model_api", "model_api")
        _add_tree(tar, model, "model")
        _add_texts(tar, extra or {})


def write_score(out: BinaryIO, *, model_api: Path, app: Path, model: Path, dockerfile: str,
                requirements: list[str], extra: dict[str, str] | None = None) -> None:
    """Write the context of a score.py app: ShipBot's model_api/, the app's repository as app/, the model as
    model/, and under shipbot/ the Dockerfile and the app's pip requirements ShipBot generated."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, model_api, "model_api")
        _add_tree(tar, app, "app")
        _add_tree(tar, model, "model")
        _add_texts(tar, {"shipbot/Dockerfile": dockerfile,
                         "shipbot/app-requirements.txt": "".join(f"{line}\n" for line in requirements),
                         **(extra or {})})


def _add_texts(tar: tarfile.TarFile, files: dict[str, str]) -> None:
    for name, text in files.items():
        data = text.encode()
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))


def write_app(out: BinaryIO, *, context: Path, model: Path, model_path: str) -> None:
    """Write the context tar of an own-image app: `context` (a folder of the checkout) and `model` at
    `model_path` (relative to the context)."""
    target = PurePosixPath(model_path.strip("/") or "model")
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, context, "", leave_out=target)
        _add_tree(tar, model, target.as_posix())


def _add_tree(tar: tarfile.TarFile, root: Path, arcroot: str, *, leave_out: PurePosixPath | None = None) -> None:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if SKIP.intersection(rel.parts) or path.suffix == ".pyc" or not path.is_file() or path.is_symlink():
            continue  # a symlink is never followed: it could lead out of the repository
        if leave_out is not None and PurePosixPath(rel.as_posix()).is_relative_to(leave_out):
            continue
        info = tarfile.TarInfo(f"{arcroot}/{rel.as_posix()}" if arcroot else rel.as_posix())
        info.size = path.stat().st_size
        info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
        info.mtime = 0
        with path.open("rb") as f:
            tar.addfile(info, f)


sha256_file = modelfiles.sha256_file
