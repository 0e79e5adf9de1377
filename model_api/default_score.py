"""The default Azure ML entry script: serves one scikit-learn/joblib or ONNX model, chosen by file type, or an
MLflow model folder by its MLmodel (sklearn or onnx flavour, or any python_function through MLflow's own loader;
its input example is the warm-up request).

Azure ML contract: init() loads the model from AZUREML_MODEL_DIR; run(raw_data) takes the request body as a
JSON string, {"data": [[f1, f2, ...], ...]}, and returns {"result": [...]}, one prediction per row.

model_api extensions, used when an entry script has them: run_batch() scores several /score bodies with one
predict() call (model_api's dynamic batching), predict() and metadata() serve the Open Inference Protocol V2
natively, sample_request() gives the warm-up request when the model folder has no sample-request.json.
Bad input raises errors.InvalidInput, which model_api answers with 422.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model_api import mlflow_model, runtimes
from model_api.errors import InvalidInput, ScoringTimeout

NUMERIC_KINDS = "fiu"  # float, signed and unsigned int; bool and strings are refused, not coerced

_model: SklearnModel | OnnxModel | PyfuncModel | None = None
_example: dict[str, Any] | None = None  # an MLflow model's input example, as a /score body


class SklearnModel:
    platform = "sklearn_joblib"

    def __init__(self, path: Path, *, estimator: Any = None) -> None:
        """`estimator`: one loaded already (an MLflow model's); else the joblib file at `path`."""
        import joblib
        import sklearn

        self.estimator = estimator if estimator is not None else joblib.load(path)
        self.n_features: int | None = getattr(self.estimator, "n_features_in_", None)
        self.input_name, self.output_name = "input-0", "output-0"
        self.input_dtype = self.output_dtype = np.dtype(np.float64)
        self._config_context = sklearn.config_context

    def predict(self, x: np.ndarray) -> np.ndarray:
        # Inputs are checked here (numeric, finite, right width), so sklearn's own checks only cost time.
        with self._config_context(assume_finite=True, skip_parameter_validation=True):
            return np.asarray(self.estimator.predict(x))


class OnnxModel:
    platform = "onnxruntime_onnx"
    _DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32}

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One server process per core already: more threads per session would only fight over the cores.
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        if inp.type not in self._DTYPES:
            raise ValueError(f"ONNX input {inp.name!r} has type {inp.type}; only numeric tensors are served")
        self.input_name, self.output_name = inp.name, out.name
        self.input_dtype = np.dtype(self._DTYPES[inp.type])
        self.output_dtype = np.dtype(self._DTYPES.get(out.type, np.float64))
        width = inp.shape[1] if len(inp.shape) == 2 else None
        self.n_features = width if isinstance(width, int) else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        y = self.session.run([self.output_name], {self.input_name: x.astype(self.input_dtype, copy=False)})[0]
        return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y


class PyfuncModel:
    """An MLflow python_function model (a custom PythonModel, or a flavour model_api has no loader of its own
    for), loaded by MLflow itself (mlflow-skinny, with the model's requirements). Rows go in as a DataFrame with
    the signature's columns, or as the matrix when the signature names none."""

    platform = "mlflow_pyfunc"
    _DTYPES = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}

    def __init__(self, folder: Path, columns: list[tuple[str, str]] | None) -> None:
        other = [f"{name} ({kind})" for name, kind in columns or () if kind not in self._DTYPES]
        if other:
            raise ValueError(f"the signature's columns {', '.join(other[:5])} are not numbers; model_api takes rows "
                             "of numbers")
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(str(folder))
        self.columns = [name for name, _ in columns or ()]
        self.dtypes = {name: np.dtype(self._DTYPES[kind]) for name, kind in columns or ()}
        self.n_features = len(self.columns) or None
        self.input_name, self.output_name = "input-0", "output-0"
        self.input_dtype = self.output_dtype = np.dtype(np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.columns:
            check_columns(x, self.dtypes)
            import pandas as pd

            x = pd.DataFrame(x, columns=self.columns).astype(self.dtypes)
        y = np.asarray(self.model.predict(x))
        return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y


def check_columns(x: np.ndarray, dtypes: dict[str, np.dtype]) -> None:
    """Rows fit the signature's column types: 3.0 is a long column's 3; 3.5, or a number past the type's range,
    is InvalidInput (not silently cut to fit)."""
    for i, (name, dtype) in enumerate(dtypes.items()):
        if dtype.kind == "i":
            column, limits = x[:, i], np.iinfo(dtype)
            whole = x.dtype.kind != "f" or bool((column == np.round(column)).all())
            if not (whole and column.min() >= limits.min and column.max() <= limits.max):
                raise InvalidInput(f"column {name!r} takes whole numbers of {dtype.name}")


def find_model_file(model_dir: Path) -> Path:
    """The one model file under model_dir (Azure ML may nest it in a sub-folder)."""
    found = runtimes.model_files(model_dir)
    if not found:
        raise FileNotFoundError(f"no model file (*.joblib, *.pkl, *.pickle, *.onnx) under {model_dir}")
    if len(found) > 1:
        raise ValueError(f"more than one model file under {model_dir}: {', '.join(p.name for p in found)}")
    return found[0]


def init() -> None:
    global _model, _example
    model_dir = Path(os.environ["AZUREML_MODEL_DIR"])
    folder = mlflow_model.find(model_dir)
    if folder is not None:  # an MLflow model: MLmodel names the flavour and the weights
        mlmodel = mlflow_model.read(folder)
        found = mlflow_model.flavour(folder, mlmodel)
        if found.runtime == "pyfunc":
            _model = PyfuncModel(folder, mlflow_model.columns(mlmodel))
        elif found.runtime == "onnx":
            _model = OnnxModel(found.path)
        else:
            _model = SklearnModel(found.path, estimator=mlflow_model.load_sklearn(found))
        _example = mlflow_model.example_request(folder, mlmodel)
        return
    path = find_model_file(model_dir)
    _model = OnnxModel(path) if runtimes.BY_SUFFIX[path.suffix.lower()] == "onnx" else SklearnModel(path)
    _example = None


def as_matrix(rows: Any) -> np.ndarray:
    """rows -> 2-D numeric array of the model's width, or InvalidInput saying what is wrong."""
    try:
        x = np.asarray(rows)
    except ValueError:
        raise InvalidInput("'data' must be a list of rows of equal length") from None
    if x.dtype.kind not in NUMERIC_KINDS:
        raise InvalidInput("'data' must hold numbers only")
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidInput(f"'data' must be a non-empty list of rows, like [[1.0, 2.0]]; got shape {list(x.shape)}")
    width = _model.n_features
    if width is not None and x.shape[1] != width:
        raise InvalidInput(f"each row must have {width} features; got {x.shape[1]}")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise InvalidInput("features must be finite numbers")
        narrow = _model.input_dtype
        if narrow.kind == "f" and narrow.itemsize < x.dtype.itemsize and np.abs(x).max() > np.finfo(narrow).max:
            raise InvalidInput(f"features must fit the model's {narrow.name} input")
    return x


def rows(raw_data: str) -> np.ndarray:
    """A /score body -> its matrix, or InvalidInput (or orjson's ValueError) saying what is wrong."""
    body = orjson.loads(raw_data)
    if not isinstance(body, dict) or "data" not in body:
        raise InvalidInput('the body must be a JSON object with a "data" key: {"data": [[...], ...]}')
    return as_matrix(body["data"])


def run(raw_data: str) -> dict[str, Any]:
    return {"result": _model.predict(rows(raw_data))}


def run_batch(raw_batch: list[str]) -> list[Any]:
    """Several /score bodies, one result or exception each. A body that is wrong fails alone."""
    parsed: list[np.ndarray | Exception] = []
    for raw in raw_batch:
        try:
            parsed.append(rows(raw))
        except (InvalidInput, ValueError) as e:  # ValueError: the body is not JSON (orjson.JSONDecodeError)
            parsed.append(e)
    predictions = iter(predict_each([x for x in parsed if isinstance(x, np.ndarray)]))
    results: list[Any] = []
    for x in parsed:
        y = x if isinstance(x, Exception) else next(predictions)
        results.append(y if isinstance(y, Exception) else {"result": y})
    return results


def predict_each(matrices: list[np.ndarray]) -> list[np.ndarray | Exception]:
    """One prediction per matrix: from one predict() call on them all when their widths agree; one call each
    when they do not or the joint call fails, so that a row the model chokes on fails only its own request."""
    if len(matrices) > 1 and len({x.shape[1] for x in matrices}) == 1:
        sizes = [len(x) for x in matrices]
        try:
            y = _model.predict(np.concatenate(matrices))
        except ScoringTimeout:
            raise
        except Exception:  # noqa: BLE001 - retried one by one below, where each error finds its request
            y = None
        if y is not None and y.ndim >= 1 and len(y) == sum(sizes):
            return np.split(y, np.cumsum(sizes[:-1]))
    return [_predict_alone(x) for x in matrices]


def _predict_alone(x: np.ndarray) -> np.ndarray | Exception:
    try:
        return _model.predict(x)
    except ScoringTimeout:
        raise
    except Exception as e:  # noqa: BLE001 - this request's own error, answered to it alone
        return e


def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if len(inputs) != 1:
        raise InvalidInput(f"this model takes exactly one input tensor, {_model.input_name!r}")
    (x,) = inputs.values()
    return {_model.output_name: _model.predict(as_matrix(x))}


def metadata() -> dict[str, Any]:
    width = _model.n_features if _model.n_features is not None else -1
    return {
        "platform": _model.platform,
        "inputs": [{"name": _model.input_name, "datatype": v2_datatype(_model.input_dtype), "shape": [-1, width]}],
        "outputs": [{"name": _model.output_name, "datatype": v2_datatype(_model.output_dtype), "shape": [-1]}],
    }


def v2_datatype(dtype: np.dtype) -> str:
    return {"f": "FP", "i": "INT", "u": "UINT"}[dtype.kind] + str(dtype.itemsize * 8)


def sample_request() -> str | None:
    if _example is not None:
        return orjson.dumps(_example).decode()
    if _model.n_features is None:
        return None
    return orjson.dumps({"data": [[0.0] * _model.n_features]}).decode()
