"""The build context of a release image, the same for every builder (Docker engine here, ACR Tasks in Azure):

    model_api/    the scoring service, from the release's source
    model/        the model folder: model file, sample-request.json, sample-response.json

Written as a plain tar with normalised owners, modes and times, so that the engine's layer cache keys on
content alone: a new model leaves the dependency and code layers cached. Files are streamed, never read
whole into memory.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import BinaryIO

SKIP = {"__pycache__", ".pytest_cache", ".git"}


def write(out: BinaryIO, *, source: Path, model: Path) -> None:
    """Write the context tar for source (a tree holding model_api/) and model (a folder) to out."""
    if not (source / "model_api" / "Dockerfile").is_file():
        raise FileNotFoundError(f"{source} has no model_api/Dockerfile")
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, source / "model_api", "model_api")
        _add_tree(tar, model, "model")


def _add_tree(tar: tarfile.TarFile, root: Path, arcroot: str) -> None:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if SKIP.intersection(rel.parts) or path.suffix == ".pyc" or not path.is_file() or path.is_symlink():
            continue
        info = tarfile.TarInfo(f"{arcroot}/{rel.as_posix()}")
        info.size = path.stat().st_size
        info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
        info.mtime = 0
        with path.open("rb") as f:
            tar.addfile(info, f)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
