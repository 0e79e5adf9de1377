"""An MLflow model folder (an `MLmodel` file, its weights, its input example), as a registry version's
artifacts hold it: which flavour serves it, how its weights load, and the warm-up request its input example makes.

The image holds model_api/ alone, so these are model_api's own copy of shared/modelfiles.py's MLflow rules;
tests/unit/test_layers.py checks that the two agree. PyYAML and skops come with the `mlflow` runtime
(requirements-mlflow.txt), which ShipBot's builders install for an MLflow folder only.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

MLMODEL = "MLmodel"
SKLEARN_FORMATS = ("pickle", "cloudpickle", "skops")
SERVED = "sklearn (pickle, cloudpickle or skops), onnx, and any python_function with its requirements.txt"
REQUIREMENTS = "requirements.txt"


class Flavour(NamedTuple):
    runtime: str          # sklearn | onnx | pyfunc
    path: Path            # the weights (a pyfunc's requirements.txt: MLflow's loader knows its own files)
    serialization: str    # pickle | cloudpickle | skops | onnx | pyfunc
    trusted: tuple[str, ...] = ()


def find(model_dir: Path) -> Path | None:
    """The MLflow folder under model_dir: model_dir itself, or the one folder it holds (Azure ML nests a
    registered model's files under its name)."""
    if (model_dir / MLMODEL).is_file():
        return model_dir
    nested = [p.parent for p in model_dir.glob(f"*/{MLMODEL}") if p.is_file()]
    return nested[0] if len(nested) == 1 else None


def read(folder: Path) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load((folder / MLMODEL).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise ValueError(f"{MLMODEL} has no `flavors` mapping")
    return doc


def flavour(folder: Path, mlmodel: dict[str, Any]) -> Flavour:
    flavors: dict[str, Any] = mlmodel["flavors"]
    sklearn, onnx = flavors.get("sklearn"), flavors.get("onnx")
    pyfunc = flavors.get("python_function") or {}
    if sklearn is None and pyfunc.get("loader_module") == "mlflow.sklearn":
        sklearn = {"pickled_model": pyfunc.get("model_path"), "serialization_format": "cloudpickle"}
    if onnx is None and pyfunc.get("loader_module") == "mlflow.onnx":
        onnx = {"data": pyfunc.get("data") or pyfunc.get("model_path")}
    if isinstance(sklearn, dict):
        form = sklearn.get("serialization_format") or "cloudpickle"
        if form not in SKLEARN_FORMATS:
            raise ValueError(f"the sklearn flavour's serialization_format {form!r} is not served; "
                             f"{', '.join(SKLEARN_FORMATS)} are")
        trusted = sklearn.get("skops_trusted_types") or ()
        return Flavour("sklearn", _inside(folder, sklearn.get("pickled_model"), "sklearn.pickled_model"), form,
                       tuple(str(t) for t in trusted) if isinstance(trusted, list) else ())
    if isinstance(onnx, dict):
        return Flavour("onnx", _inside(folder, onnx.get("data"), "onnx.data"), "onnx")
    if isinstance(pyfunc.get("loader_module"), str) and pyfunc["loader_module"]:
        return Flavour("pyfunc", folder / REQUIREMENTS, "pyfunc")
    named = ", ".join(sorted(flavors)) or "none"
    loader = pyfunc.get("loader_module")
    raise ValueError(f"the MLflow model's flavours ({named}{f'; python_function loader {loader}' if loader else ''})"
                     f" are not served; model_api serves {SERVED}")


def load_sklearn(found: Flavour) -> Any:
    """The estimator, loaded as mlflow.sklearn would: skops with the types MLmodel trusts, else (cloud)pickle."""
    if found.serialization == "skops":
        import skops.io

        untrusted = [t for t in skops.io.get_untrusted_types(file=found.path) if t not in found.trusted]
        if untrusted:
            raise ValueError(f"the skops model uses types neither skops nor MLmodel's skops_trusted_types trust: "
                             f"{', '.join(untrusted[:5])}")
        return skops.io.load(found.path, trusted=list(found.trusted) or None)
    if found.serialization == "cloudpickle":
        import cloudpickle

        with found.path.open("rb") as f:
            return cloudpickle.load(f)
    import pickle

    with found.path.open("rb") as f:
        return pickle.load(f)


def columns(mlmodel: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The input columns of a column-based signature, (name, MLflow type) in order; None for a tensor signature
    or none."""
    signature = mlmodel.get("signature")
    try:
        inputs = json.loads(signature.get("inputs") or "null") if isinstance(signature, dict) else None
    except ValueError:
        return None
    if not isinstance(inputs, list) or not inputs:
        return None
    found = [(entry.get("name"), entry.get("type")) for entry in inputs
             if isinstance(entry, dict) and entry.get("type") != "tensor"]
    ok = len(found) == len(inputs) and all(isinstance(n, str) and isinstance(t, str) for n, t in found)
    return [(str(n), str(t)) for n, t in found] if ok else None


def example_request(folder: Path, mlmodel: dict[str, Any]) -> dict[str, Any] | None:
    """`{"data": rows}` from the input example, when it is a table or a matrix of numbers."""
    info = mlmodel.get("saved_input_example_info")
    if not isinstance(info, dict) or not isinstance(info.get("artifact_path"), str):
        return None
    path = _inside(folder, info["artifact_path"], "saved_input_example_info.artifact_path")
    try:
        example = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or broken: no warm-up request of it (the build refuses one it needs)
        return None
    if isinstance(example, dict):
        example = example.get("data", example.get("inputs"))
    if isinstance(example, list) and example and all(isinstance(row, list) and row for row in example):
        if all(isinstance(v, int | float) and not isinstance(v, bool) for row in example for v in row):
            return {"data": example}
    return None


def _inside(folder: Path, path: Any, key: str) -> Path:
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in PurePosixPath(path).parts:
        raise ValueError(f"MLmodel's {key} must name a file inside the model folder; it is {path!r}")
    return folder / PurePosixPath(path).as_posix()
