"""model_api serving MLflow model folders as mlflow.sklearn writes them (tests/fixtures/mlflow, made by a real
MLflow), an ONNX one, and the folders it cannot serve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

FIXTURES = Path(__file__).parents[1] / "fixtures" / "mlflow"


def mlflow_copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def example_rows(folder: Path) -> list[list[float]]:
    return json.loads((folder / "input_example.json").read_text())["data"]


def the_saved_ridge():
    """What make.py saved: Ridge(alpha=0.5) on the whole diabetes set (deterministic)."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    return Ridge(alpha=0.5).fit(*load_diabetes(return_X_y=True))


@pytest.mark.parametrize("form", ["skops", "cloudpickle"])
def test_an_mlflow_sklearn_model_is_served_and_scores_like_the_ridge_it_was_saved_from(serve, tmp_path,
                                                                                        sample_rows, form):
    service = serve(model_dir=mlflow_copy(tmp_path, f"sklearn-{form}"))

    assert service.get("/readyz").status_code == 200
    response = service.post("/score", json={"data": sample_rows.tolist()})

    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["result"], the_saved_ridge().predict(sample_rows), rtol=1e-9)


def test_the_mlflow_input_example_is_the_warm_up_request(serve, tmp_path):
    folder = mlflow_copy(tmp_path, "sklearn-skops")
    (folder / "input_example.json").write_text(json.dumps({"columns": ["age", "sex", "bmi"],
                                                           "data": [[0.1, 0.2, 0.3]]}))

    response = serve(model_dir=folder).get("/readyz")

    assert response.status_code == 503  # the warm-up run scored the example, which is three features wide
    assert "each row must have 10 features; got 3" in response.json()["error"]


def test_an_mlflow_folder_nested_under_the_model_dir_is_found(serve, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURES / "sklearn-skops", model_dir / "diabetes")  # as Azure ML mounts a registered model

    assert serve(model_dir=model_dir).get("/readyz").status_code == 200


def test_an_onnx_flavour_is_served_by_onnxruntime(serve, tmp_path, onnx_dir, ridge, sample_rows):
    folder = tmp_path / "onnx"
    folder.mkdir()
    shutil.copy(onnx_dir / "model.onnx", folder / "model.onnx")
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {
        "onnx": {"data": "model.onnx", "onnx_version": "1.17.0"},
        "python_function": {"loader_module": "mlflow.onnx", "data": "model.onnx"}}}))

    service = serve(model_dir=folder)
    response = service.post("/score", json={"data": sample_rows.tolist()})

    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["result"], ridge.predict(sample_rows), atol=1e-4)
    assert service.get("/v2/models/model").json()["platform"] == "onnxruntime_onnx"


@pytest.mark.parametrize("change, says", [
    (lambda doc: doc.update(flavors={"pytorch": {"model_data": "data"}}), "flavours (pytorch) are not served"),
    (lambda doc: doc.update(flavors={"pytorch": {"model_data": "data"}, "python_function": {
        "loader_module": "mlflow.pytorch"}}), "No module named 'mlflow'"),  # an image built without MLflow
    (lambda doc: doc["flavors"]["sklearn"].update(serialization_format="joblib"), "'joblib' is not served"),
    (lambda doc: doc["flavors"]["sklearn"].update(pickled_model="../../etc/passwd"), "must name a file inside"),
    (lambda doc: doc.pop("flavors"), "has no `flavors` mapping"),
], ids=["pytorch", "pyfunc-without-mlflow", "unknown-format", "path-outside", "no-flavours"])
def test_an_mlflow_model_model_api_cannot_serve_is_not_ready_and_says_why(serve, tmp_path, change, says):
    folder = mlflow_copy(tmp_path, "sklearn-skops")
    doc = yaml.safe_load((folder / "MLmodel").read_text())
    change(doc)
    (folder / "MLmodel").write_text(yaml.safe_dump(doc))

    response = serve(model_dir=folder).get("/readyz")

    assert response.status_code == 503
    assert says in response.json()["error"]


def test_a_skops_model_with_types_nobody_trusts_is_not_loaded(serve, tmp_path):
    import operator

    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    folder = mlflow_copy(tmp_path, "sklearn-skops")
    skops.io.dump(FunctionTransformer(operator.neg), folder / "model.skops")

    response = serve(model_dir=folder).get("/readyz")

    assert response.status_code == 503
    assert "types neither skops nor MLmodel's skops_trusted_types trust: _operator.neg" in response.json()["error"]


# -- a python_function model: what model_api checks before MLflow sees the rows (MLflow itself is in the image
#    only: tests/integration/test_model_registry_flow.py serves one) --------------------------------------------
def test_rows_for_whole_number_columns_must_be_whole_and_in_range():
    from model_api import default_score
    from model_api.errors import InvalidInput

    dtypes = {"age": np.dtype(np.float64), "visits": np.dtype(np.int32)}
    default_score.check_columns(np.array([[41.5, 3.0], [50.0, 0.0]]), dtypes)
    default_score.check_columns(np.array([[41, 3]]), dtypes)
    for rows in ([[41.5, 3.5]], [[1.0, 2.0 ** 40]], [[1.0, -(2.0 ** 31) - 1]]):
        with pytest.raises(InvalidInput, match="column 'visits' takes whole numbers of int32"):
            default_score.check_columns(np.array(rows), dtypes)


def test_a_python_function_model_whose_signature_takes_text_is_refused_before_it_loads(tmp_path):
    from model_api import default_score

    with pytest.raises(ValueError, match=r"columns review \(string\) are not numbers"):
        default_score.PyfuncModel(tmp_path, [("age", "double"), ("review", "string")])
