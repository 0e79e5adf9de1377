"""Which runtime serves which model file. Dependency-free: the image builder reads it too.

The image installs only the runtimes its model needs (build arg MODEL_RUNTIMES), ~70 MB less per image.
"""

from pathlib import Path

BY_SUFFIX = {".joblib": "sklearn", ".pkl": "sklearn", ".pickle": "sklearn", ".onnx": "onnx"}
ALL = ("sklearn", "onnx")


def model_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.suffix.lower() in BY_SUFFIX and p.is_file())


def for_model_dir(model_dir: Path) -> tuple[str, ...]:
    """The runtimes the model files under model_dir need; all of them when there are none to go by."""
    found = {BY_SUFFIX[p.suffix.lower()] for p in model_files(model_dir)}
    return tuple(r for r in ALL if r in found) or ALL
