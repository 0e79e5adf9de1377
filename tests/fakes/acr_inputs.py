"""Inputs for AcrTasksBuilder tests without git or a trained model: this checkout's model_api/ as the source,
and a model folder made of bytes (or of big files, copied in chunks). The fake ACR does not build them; the
Docker-backed tests use tests/localstack.py's real repository and sample model instead."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shared import buildcontext
from shared.releases import Model

ROOT = Path(__file__).resolve().parents[2]


class TreeSource:
    """The Source port over this checkout's model_api/ (any sha): a real build context without git."""

    def archive(self, sha: str, destination: Path) -> None:
        shutil.copytree(ROOT / "model_api", destination / "model_api",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))


class FilesSource:
    """The Source port over a few files given as text (any sha): an app's repository without git."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def archive(self, sha: str, destination: Path) -> None:
        for name, text in self.files.items():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            (destination / name).write_text(text)


class BytesModels:
    """The Models port over files given as bytes, or as paths (copied in chunks, never whole in memory)."""

    def __init__(self, files: dict[str, bytes | Path]) -> None:
        self.files = files

    def download(self, model: Any, destination: Path) -> None:
        for name, data in self.files.items():
            if isinstance(data, Path):
                shutil.copyfile(data, destination / name)
            else:
                (destination / name).write_bytes(data)

    def model(self, name: str = "diabetes", version: str = "1") -> Model:
        """The Model these files make, named by the sha256 of model.joblib."""
        with tempfile.TemporaryDirectory() as tmp:
            self.download(None, Path(tmp))
            sha = buildcontext.sha256_file(Path(tmp, "model.joblib"))
        return Model(name, version, sha, f"{name}/{version}/model.joblib", dt.datetime(2026, 3, 1, tzinfo=dt.UTC))


def sample_files(model: bytes = b"not really a model, ACR is fake here\n") -> dict[str, bytes]:
    return {"model.joblib": model, "sample-request.json": b'{"data": [[1, 2]]}',
            "sample-response.json": b'{"result": [3.0]}'}
