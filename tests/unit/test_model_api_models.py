"""The default entry script and the model folder: ONNX as well as scikit-learn, and folders it cannot serve."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest


# -- ONNX -------------------------------------------------------------------------------------------------------
def test_an_onnx_model_is_served_by_the_default_entry_script(serve, onnx_dir, ridge, sample_rows):
    service = serve(model_dir=onnx_dir)
    assert service.get("/readyz").status_code == 200

    response = service.post("/score", json={"data": sample_rows.tolist()})

    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["result"], ridge.predict(sample_rows), rtol=0, atol=1e-4)


def test_the_onnx_models_metadata_says_onnxruntime_and_fp32(serve, onnx_dir):
    response = serve(model_dir=onnx_dir).get("/v2/models/model")

    assert response.status_code == 200
    assert response.json() == {
        "name": "model", "versions": [], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 10]}],
        "outputs": [{"name": "Y", "datatype": "FP32", "shape": [-1]}],
    }


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_v2_infer_on_the_onnx_model_matches_the_ridge(serve, onnx_dir, ridge, sample_rows, datatype):
    request = {"inputs": [{"name": "X", "datatype": datatype, "shape": list(sample_rows.shape),
                           "data": sample_rows.reshape(-1).tolist()}]}

    response = serve(model_dir=onnx_dir).post("/v2/models/model/infer", json=request)

    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("Y", "FP32", [len(sample_rows)])
    np.testing.assert_allclose(output["data"], ridge.predict(sample_rows), rtol=0, atol=1e-4)


def test_the_onnx_model_refuses_the_wrong_feature_count_with_422(serve, onnx_dir, assert_error):
    response = serve(model_dir=onnx_dir).post("/score", json={"data": [[0.1] * 3]})

    assert assert_error(response, 422, "InvalidInput") == "each row must have 10 features; got 3"


def test_the_onnx_model_refuses_values_its_float32_input_cannot_hold_with_422(serve, onnx_dir, assert_error):
    response = serve(model_dir=onnx_dir).post("/score", json={"data": [[1e39] + [0.1] * 9]})

    assert assert_error(response, 422, "InvalidInput") == "features must fit the model's float32 input"


# -- the model folder ---------------------------------------------------------------------------------------------
def test_a_model_file_nested_in_a_sub_folder_is_found(serve, diabetes_dir, tmp_path, ridge, sample_rows):
    model_dir = tmp_path / "model"
    shutil.copytree(diabetes_dir, model_dir / "diabetes" / "1")  # as Azure ML mounts a registered model

    service = serve(model_dir=model_dir)

    assert service.get("/readyz").status_code == 200
    response = service.post("/score", json={"data": sample_rows.tolist()})
    np.testing.assert_allclose(response.json()["result"], ridge.predict(sample_rows), atol=1e-6)


@pytest.mark.parametrize("second", ["other.pkl", "sub/model.joblib", "model.onnx", "MODEL.PICKLE"])
def test_a_model_folder_with_two_model_files_is_not_ready_and_says_which(serve, diabetes_dir, onnx_dir, tmp_path,
                                                                        assert_error, second):
    model_dir = tmp_path / "model"
    shutil.copytree(diabetes_dir, model_dir)
    (model_dir / second).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx_dir / "model.onnx" if second.endswith(".onnx") else diabetes_dir / "model.joblib",
                model_dir / second)

    service = serve(model_dir=model_dir)

    response = service.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "failed"
    error = response.json()["error"]
    assert error.startswith("ValueError: more than one model file")
    assert "model.joblib" in error and (model_dir / second).name in error
    assert "more than one model file" in assert_error(service.post("/score", json={"data": [[0] * 10]}),
                                                      503, "ModelNotReady")


@pytest.mark.parametrize("files", [[], ["README.md", "sample-request.json"], ["model.txt"]],
                         ids=["empty", "no-model-among-others", "wrong-suffix"])
def test_a_model_folder_without_a_model_file_is_not_ready(serve, tmp_path, files):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in files:
        (model_dir / name).write_text("{}")

    response = serve(model_dir=model_dir).get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "failed"
    assert response.json()["error"].startswith(f"FileNotFoundError: no model file (*.joblib, *.pkl, *.pickle, *.onnx)"
                                               f" under {model_dir}")


def test_a_missing_model_folder_is_not_ready(serve, tmp_path):
    response = serve(model_dir=tmp_path / "absent").get("/readyz")

    assert response.status_code == 503
    assert "no model file" in response.json()["error"]


def test_a_corrupt_model_file_is_not_ready(serve, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"this is not a protobuf")

    response = serve(model_dir=model_dir).get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "failed"


def test_the_model_dir_is_handed_to_the_entry_script_as_azureml_model_dir(serve, script, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    entry = script("score.py", "import os\n"
                               "def init():\n"
                               "    global seen\n"
                               "    seen = os.environ['AZUREML_MODEL_DIR']\n"
                               "def run(raw_data):\n"
                               "    return {'model_dir': seen}\n")

    response = serve(model_dir=model_dir, entry_script=entry).post("/score", content=b"{}")

    assert response.json() == {"model_dir": str(model_dir)}
    assert os.environ["AZUREML_MODEL_DIR"] == str(model_dir)  # the Azure ML contract; the fixture restores it


def test_a_classifier_with_text_labels_answers_them_as_json_strings(serve, tmp_path):
    import joblib
    from sklearn.tree import DecisionTreeClassifier

    folder = tmp_path / "labels"
    folder.mkdir()
    joblib.dump(DecisionTreeClassifier().fit([[0.0], [1.0]], np.array(["low", "high"], dtype=object)),
                folder / "model.joblib")
    (folder / "sample-request.json").write_text('{"data": [[0.0]]}')

    service = serve(model_dir=folder)

    assert service.post("/score", json={"data": [[0.0], [1.0], [0.9]]}).json() == {"result": ["low", "high", "high"]}
