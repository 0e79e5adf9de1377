"""Which files of a model folder are the model, and which runtime serves each: what the builders pass to the
image (build arg MODEL_RUNTIMES) and what the models container counts as a model file.

model_api keeps its own copy (model_api/runtimes.py: the image holds model_api/ alone, not shared/), and
tests/unit/test_layers.py checks that the two agree. The core never imports model_api: an installed `shipbot`
does not ship it.

Pure, apart from listing a folder.
"""

from __future__ import annotations

from pathlib import Path

BY_SUFFIX = {".joblib": "sklearn", ".pkl": "sklearn", ".pickle": "sklearn", ".onnx": "onnx"}
ALL = ("sklearn", "onnx")


def model_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.suffix.lower() in BY_SUFFIX and p.is_file())


def runtimes_for(model_dir: Path) -> tuple[str, ...]:
    """The runtimes the model files under model_dir need; all of them when there are none to go by."""
    found = {BY_SUFFIX[p.suffix.lower()] for p in model_files(model_dir)}
    return tuple(r for r in ALL if r in found) or ALL
