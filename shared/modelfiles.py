"""What a model folder holds: which of its files are the model, which runtime serves it, what identifies it.

Two kinds of folder:

    one file    a model file (a suffix of BY_SUFFIX) plus sample-request.json and sample-response.json, as a data
                scientist uploads it to the models container; identified by the model file's sha256
    MLflow      an MLflow model as a registry version's artifacts hold it: an `MLmodel` file naming its flavours,
                the weights, the environment files and often an input example; identified by the sha256 of
                the whole folder (`folder_digest`), so any change to any artifact is a new release

What the builders pass to the image (build arg MODEL_RUNTIMES) comes from here. model_api keeps its own copy
of the one-file rules (model_api/runtimes.py: the image holds model_api/ alone, not shared/) and its own reader
of MLmodel; tests/unit/test_layers.py checks that they agree. The core never imports model_api: an installed
`shipbot` does not ship it.

Reads the folder it is given; no network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

BY_SUFFIX = {".joblib": "sklearn", ".pkl": "sklearn", ".pickle": "sklearn", ".onnx": "onnx"}
ALL = ("sklearn", "onnx")
MLMODEL = "MLmodel"
MLFLOW_RUNTIME = "mlflow"  # what an MLflow folder needs on top of its flavour's runtime (MLmodel's reader, skops)
# They travel with a model (model_api's sample request and response) but are not the model.
SIDECAR_FILES = frozenset({"sample-request.json", "sample-response.json"})
SKLEARN_FORMATS = ("pickle", "cloudpickle", "skops")  # mlflow.sklearn's serialization formats
SERVED = "sklearn (pickle, cloudpickle or skops), onnx, and any python_function with its requirements.txt"
PYFUNC_RUNTIME = "pyfunc"  # a python_function model loaded by MLflow itself, with the model's own requirements
REQUIREMENTS = "requirements.txt"  # what MLflow writes beside a model: the packages its loader needs
# A pyfunc image installs the model's requirements with model_api's server; these are pinned when the model's
# requirements leave them out (pandas: pyfunc's input; numpy: model_api's and everything's).
PYFUNC_DEFAULTS = {"numpy": "numpy==2.4.6", "pandas": "pandas==3.1.1"}
_COMMENT = re.compile(r"(^|\s+)#.*$")  # pip's own rule: a # at the start or after whitespace
_ARCHIVE = re.compile(r"\.(whl|zip|tar|gz|tgz|bz2|tbz|xz|txz|lz|tlz)$", re.IGNORECASE)  # pip reads these as files


@dataclasses.dataclass(frozen=True, slots=True)
class Flavour:
    """The MLflow flavour model_api serves an MLflow folder with."""

    runtime: str          # sklearn | onnx | pyfunc
    path: str             # the file it cannot do without, relative to the folder: the weights (a pyfunc's
                          # requirements.txt: the loader itself knows its files)
    serialization: str    # pickle | cloudpickle | skops | onnx | pyfunc
    trusted: tuple[str, ...] = ()  # skops: the types MLmodel says to trust beyond skops' defaults


def model_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.suffix.lower() in BY_SUFFIX and p.is_file())


def is_mlflow(model_dir: Path) -> bool:
    return (model_dir / MLMODEL).is_file()


def runtimes_for(model_dir: Path) -> tuple[str, ...]:
    """The runtimes the model needs; all of them when there is nothing to go by. An MLflow folder's flavour
    decides (ValueError when model_api serves none of its flavours)."""
    if is_mlflow(model_dir):
        runtime = flavour(read_mlmodel(model_dir)).runtime
        return (runtime,) if runtime == PYFUNC_RUNTIME else (runtime, MLFLOW_RUNTIME)
    found = {BY_SUFFIX[p.suffix.lower()] for p in model_files(model_dir)}
    return tuple(r for r in ALL if r in found) or ALL


def fingerprint(model_dir: Path) -> str:
    """What identifies the model in a release: the one model file's sha256, or an MLflow folder's digest.
    ValueError says why the folder is no model ShipBot can serve."""
    if is_mlflow(model_dir):
        found = flavour(read_mlmodel(model_dir))
        if not (model_dir / found.path).is_file():
            raise ValueError(f"MLmodel names {found.path} as the model, and the folder has no such file")
        return folder_digest((rel, sha256_file(model_dir / rel)) for rel in artifact_files(model_dir))
    found_files = model_files(model_dir)
    if len(found_files) != 1:
        raise ValueError(f"the model folder must hold exactly one model file (*.joblib, *.pkl, *.pickle, *.onnx) "
                         f"or an MLflow model (an MLmodel file); found {len(found_files)} model files")
    return sha256_file(found_files[0])


def artifact_files(model_dir: Path) -> list[str]:
    """An MLflow folder's files, relative, as `folder_digest` takes them: the sidecars ShipBot adds are not
    the model's."""
    return sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")
                  if p.is_file() and not p.is_symlink() and p.relative_to(model_dir).as_posix() not in SIDECAR_FILES)


def folder_digest(files: Iterable[tuple[str, str]]) -> str:
    """The sha256 of a folder from its files' (relative path, sha256) pairs, in any order: what a registry
    adapter computes from the files it downloads and the builder from the folder it builds from."""
    digest = hashlib.sha256()
    for rel, sha in sorted(files):
        digest.update(f"{PurePosixPath(rel).as_posix()}\0{sha}\n".encode())
    return digest.hexdigest()


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load((model_dir / MLMODEL).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{MLMODEL} is not YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise ValueError(f"{MLMODEL} has no `flavors` mapping")
    return doc


def flavour(mlmodel: dict[str, Any]) -> Flavour:
    """The flavour model_api serves the model with: sklearn, else onnx, else a python_function whose loader is
    one of those. ValueError names what the model has when it is none of them."""
    flavors: dict[str, Any] = mlmodel["flavors"]
    sklearn, onnx = flavors.get("sklearn"), flavors.get("onnx")
    pyfunc = flavors.get("python_function") or {}
    if sklearn is None and pyfunc.get("loader_module") == "mlflow.sklearn":
        sklearn = {"pickled_model": pyfunc.get("model_path"), "serialization_format": "cloudpickle"}
    if onnx is None and pyfunc.get("loader_module") == "mlflow.onnx":
        onnx = {"data": pyfunc.get("data") or pyfunc.get("model_path")}
    if isinstance(sklearn, dict):
        path, form = sklearn.get("pickled_model"), sklearn.get("serialization_format") or "cloudpickle"
        if form not in SKLEARN_FORMATS:
            raise ValueError(f"the sklearn flavour's serialization_format {form!r} is not served; "
                             f"{', '.join(SKLEARN_FORMATS)} are")
        trusted = sklearn.get("skops_trusted_types") or ()
        return Flavour("sklearn", _relative(path, "sklearn.pickled_model"), form,
                       tuple(str(t) for t in trusted) if isinstance(trusted, list) else ())
    if isinstance(onnx, dict):
        return Flavour("onnx", _relative(onnx.get("data"), "onnx.data"), "onnx")
    if isinstance(pyfunc.get("loader_module"), str) and pyfunc["loader_module"]:
        return Flavour(PYFUNC_RUNTIME, REQUIREMENTS, PYFUNC_RUNTIME)
    named = ", ".join(sorted(flavors)) or "none"
    loader = pyfunc.get("loader_module")
    raise ValueError(f"the MLflow model's flavours ({named}{f'; python_function loader {loader}' if loader else ''})"
                     f" are not served; model_api serves {SERVED}")


def pyfunc_requirements(model_dir: Path) -> str:
    """The pip requirements a pyfunc image installs for the model: its requirements.txt, with `mlflow` read as
    `mlflow-skinny` of the same version (the loader without the tracking server), and numpy and pandas pinned
    when it names neither (pandas alone, unpinned, when it pins its own numpy: pip then picks a pandas for it).
    ValueError names a line that is not a plain requirement: pip options (--index-url, -r, -e, --config-settings),
    URLs and file paths are refused, as they would reach beyond PyPI or run other builds."""
    from packaging.requirements import InvalidRequirement, Requirement

    lines, named = [], set()
    text = (model_dir / REQUIREMENTS).read_text(encoding="utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        try:
            requirement = Requirement(line) if not line.startswith("-") else None
        except InvalidRequirement:
            requirement = None
        if requirement is None or requirement.url is not None or _ARCHIVE.search(requirement.name):
            raise ValueError(f"{REQUIREMENTS} line {number} ({line[:60]!r}) is not a plain requirement; pip options, "
                             "URLs and paths are not installed")
        name = requirement.name.lower().replace("_", "-").replace(".", "-")
        named.add(name)
        if name == "mlflow":  # as written otherwise: what the data scientist's pipeline pinned, word for word
            requirement.name, requirement.extras = "mlflow-skinny", set()
            line = str(requirement)
        lines.append(line)
    if "mlflow" not in named and "mlflow-skinny" not in named:
        raise ValueError(f"{REQUIREMENTS} does not name mlflow, which loads a python_function model")
    if "numpy" not in named:
        lines += [PYFUNC_DEFAULTS["numpy"]] + ([] if "pandas" in named else [PYFUNC_DEFAULTS["pandas"]])
    elif "pandas" not in named:
        lines.append("pandas")
    return "".join(f"{line}\n" for line in lines)


def python_version(mlmodel: dict[str, Any]) -> str | None:
    """The Python (major.minor) an MLflow model was saved with, when MLmodel says."""
    pyfunc = mlmodel.get("flavors", {}).get("python_function") or {}
    found = re.match(r"(\d+)\.(\d+)", str(pyfunc.get("python_version") or ""))
    return f"{found[1]}.{found[2]}" if found else None


def _relative(path: Any, key: str) -> str:
    """`path` as a normalised relative path inside the folder (`./model.pkl` is `model.pkl`)."""
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in PurePosixPath(path).parts:
        raise ValueError(f"MLmodel's {key} must name a file inside the model folder; it is {path!r}")
    return PurePosixPath(path).as_posix()


def example_request(model_dir: Path, mlmodel: dict[str, Any]) -> dict[str, Any] | None:
    """model_api's request body (`{"data": rows}`) made of the MLflow model's input example, or None when it
    has none that is a table or a matrix of numbers. ValueError when the example file is not JSON."""
    info = mlmodel.get("saved_input_example_info")
    if not isinstance(info, dict) or not isinstance(info.get("artifact_path"), str):
        return None
    path = model_dir / _relative(info["artifact_path"], "saved_input_example_info.artifact_path")
    if not path.is_file():
        return None
    try:
        example = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"the input example {info['artifact_path']} is not JSON: {e}") from None
    rows = _rows(example)
    return {"data": rows} if rows is not None else None


def _rows(example: Any) -> list[list[Any]] | None:
    """The rows of an input example as MLflow saves one: a DataFrame in `split` orient ({columns, data}), a
    tensor ({"inputs": ...}), or a bare list of rows."""
    if isinstance(example, dict):
        example = example.get("data", example.get("inputs"))
    if isinstance(example, list) and example and all(isinstance(row, list) and row for row in example):
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for row in example for v in row)
        return example if numbers else None
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
