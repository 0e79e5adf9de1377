"""The Open Inference Protocol V2 endpoints: server and model metadata, health, inference."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from model_api.settings import BuildInfo, Settings

NAME, VERSION = "diabetes", "3"
INFER = f"/v2/models/{NAME}/infer"


@pytest.fixture
def v2(serve, diabetes_dir):
    """The sample model, served as diabetes version 3."""
    return serve(settings=Settings(model_dir=diabetes_dir, model_name=NAME,
                                   build=BuildInfo(model_name=NAME, model_version=VERSION)))


def tensor(rows, datatype="FP64", name="input-0", shape=None):
    array = np.asarray(rows)
    return {"name": name, "datatype": datatype, "shape": list(array.shape) if shape is None else shape,
            "data": array.tolist()}


def test_the_server_metadata_names_the_server_and_protocol(v2):
    response = v2.get("/v2")

    assert response.status_code == 200
    assert response.json() == {"name": "model_api", "version": "2", "extensions": []}


def test_server_liveness_and_readiness_answer_200_once_loaded(v2):
    assert v2.get("/v2/health/live").json() == {"live": True}
    assert v2.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize("path", [f"/v2/models/{NAME}", f"/v2/models/{NAME}/versions/{VERSION}"])
def test_model_metadata_describes_the_sklearn_model(v2, path):
    response = v2.get(path)

    assert response.status_code == 200
    assert response.json() == {
        "name": NAME, "versions": [VERSION], "platform": "sklearn_joblib",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 10]}],
        "outputs": [{"name": "output-0", "datatype": "FP64", "shape": [-1]}],
    }


def test_model_metadata_of_an_unversioned_build_lists_no_versions(serve):
    response = serve().get("/v2/models/model")

    assert response.status_code == 200
    assert response.json()["name"] == "model"
    assert response.json()["versions"] == []


@pytest.mark.parametrize("path", [f"/v2/models/{NAME}/ready", f"/v2/models/{NAME}/versions/{VERSION}/ready"])
def test_model_readiness_answers_200_once_loaded(v2, path):
    response = v2.get(path)

    assert response.status_code == 200
    assert response.json() == {"ready": True}


@pytest.mark.parametrize("path", [INFER, f"/v2/models/{NAME}/versions/{VERSION}/infer"])
def test_infer_answers_the_models_predictions(v2, ridge, sample_rows, path):
    response = v2.post(path, json={"id": "req-1", "inputs": [tensor(sample_rows)]})

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("model_name", "model_version", "id")} == {
        "model_name": NAME, "model_version": VERSION, "id": "req-1"}
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("output-0", "FP64", [len(sample_rows)])
    np.testing.assert_allclose(output["data"], ridge.predict(sample_rows), rtol=0, atol=1e-6)


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64", "INT8", "UINT16"])
def test_infer_takes_flat_data_of_any_numeric_datatype(v2, ridge, datatype):
    rows = np.arange(20).reshape(2, 10) % 5
    request = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2, 10], "data": rows.reshape(-1).tolist()}]}

    response = v2.post(INFER, json=request)

    assert response.status_code == 200, response.text
    assert "id" not in response.json()
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], ridge.predict(rows.astype(float)), atol=1e-6)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v2/models/other"), ("GET", "/v2/models/other/ready"), ("POST", "/v2/models/other/infer"),
    ("GET", f"/v2/models/other/versions/{VERSION}"), ("GET", "/v2/models/"),
])
def test_an_unknown_model_name_answers_404(v2, assert_error, sample_rows, method, path):
    response = v2.request(method, path, json={"inputs": [tensor(sample_rows)]} if method == "POST" else None)

    assert "no model named" in assert_error(response, 404, "NotFound")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"/v2/models/{NAME}/versions/4"), ("GET", f"/v2/models/{NAME}/versions/4/ready"),
    ("POST", f"/v2/models/{NAME}/versions/4/infer"), ("GET", f"/v2/models/{NAME}/versions//ready"),
])
def test_an_unknown_model_version_answers_404(v2, assert_error, sample_rows, method, path):
    response = v2.request(method, path, json={"inputs": [tensor(sample_rows)]} if method == "POST" else None)

    assert "has no version" in assert_error(response, 404, "NotFound")


def test_an_unversioned_build_has_no_versions_to_ask_for(serve, assert_error):
    assert_error(serve().get("/v2/models/model/versions/1"), 404, "NotFound")


@pytest.mark.parametrize(("request_body", "says"), [
    ({"inputs": [tensor([[0.1] * 10], datatype="FP99")]}, "datatype 'FP99'"),
    ({"inputs": [tensor([[0.1] * 10], datatype="BYTES")]}, "datatype 'BYTES'"),
    ({"inputs": [{"name": "x", "shape": [1, 10], "data": [0.1] * 10}]}, "datatype None"),
    ({"inputs": [tensor([[0.5] * 10], datatype="INT64")]}, "does not hold INT64"),
    ({"inputs": [tensor([[True] * 10])]}, "does not hold FP64"),
    ({"inputs": [tensor([[1] * 10], datatype="BOOL")]}, "does not hold BOOL"),
    ({"inputs": [tensor([["a"] * 10])]}, "does not hold FP64"),
    ({"inputs": [tensor([[0.1] * 10], shape=[2, 10])]}, "10 values do not fill shape [2, 10]"),
    ({"inputs": [tensor([[0.1] * 10], shape=[10, 10])]}, "do not fill shape"),
    ({"inputs": [tensor([[0.1] * 10], shape=[1, -10])]}, "non-negative integers"),
    ({"inputs": [tensor([[0.1] * 10], shape="1x10")]}, "non-negative integers"),
    ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 2], "data": [[1.0, 2.0], [3.0]]}]}, "equal rows"),
    ({"inputs": [tensor([[0.1] * 10], name="")]}, '"name"'),
    ({"inputs": ["x"]}, "each input must be an object"),
    ({"inputs": []}, '"inputs" list'),
    ({"inputs": {"input-0": [0.1] * 10}}, '"inputs" list'),
    ({"data": [[0.1] * 10]}, '"inputs" list'),
    ([], '"inputs" list'),
    ({"id": 7, "inputs": [tensor([[0.1] * 10])]}, '"id" must be a string'),
    ({"inputs": [tensor([[0.1] * 9])]}, "10 features; got 9"),
    ({"inputs": [tensor(np.zeros((0, 10)))]}, "non-empty list of rows"),
    ({"inputs": [tensor([[0.1] * 10]), tensor([[0.1] * 10], name="input-1")]}, "exactly one input"),
], ids=["unknown-datatype", "bytes", "no-datatype", "floats-as-INT64", "booleans-as-FP64", "ints-as-BOOL",
        "strings", "too-few-values", "too-many-values", "negative-dimension", "shape-not-a-list", "ragged-data",
        "empty-name", "input-not-an-object", "empty-inputs", "inputs-not-a-list", "missing-inputs", "a-list-body",
        "id-not-a-string", "wrong-feature-count", "no-rows", "two-inputs"])
def test_infer_with_a_bad_request_answers_422(v2, assert_error, request_body, says):
    message = assert_error(v2.post(INFER, content=orjson.dumps(request_body)), 422, "InvalidInput")

    assert says in message


@pytest.mark.parametrize(("datatype", "value"), [("UINT8", 300), ("UINT8", -1), ("INT8", 128), ("INT16", -40000),
                                                 ("UINT64", -1)])
def test_infer_with_integers_out_of_the_datatypes_range_answers_422(v2, assert_error, datatype, value):
    request = {"inputs": [tensor([[value] * 10], datatype=datatype)]}

    message = assert_error(v2.post(INFER, json=request), 422, "InvalidInput")

    assert f"out of the range of {datatype}" in message


@pytest.mark.parametrize("body", [b"not json", b"", b'{"inputs": [', "{}".encode("utf-16")])
def test_infer_with_a_body_that_is_not_json_answers_400(v2, assert_error, body):
    assert "not valid JSON" in assert_error(v2.post(INFER, content=body), 400, "BadRequest")


def test_infer_with_a_body_over_max_body_bytes_answers_413(serve, assert_error, sample_rows):
    service = serve(max_body_bytes=100)

    response = service.post("/v2/models/model/infer", json={"inputs": [tensor(sample_rows)]})

    assert_error(response, 413, "PayloadTooLarge")


def test_v2_before_the_model_is_ready_answers_503(serve, gate, gated_script, empty_dir, assert_error):
    service = serve(model_dir=empty_dir, entry_script=gated_script, wait=False)
    assert gate.entered.wait(10)

    assert service.get("/v2/health/ready").json() == {"ready": False}
    assert service.get("/v2/models/model/ready").status_code == 503
    assert "loading" in assert_error(service.get("/v2/models/model"), 503, "ModelNotReady")
    infer = service.post("/v2/models/model/infer", json={"inputs": [tensor([[1.0]])]})
    assert "loading" in assert_error(infer, 503, "ModelNotReady")


# -- a plain Azure ML entry script, without predict() or metadata() ---------------------------------------------
@pytest.fixture
def plain(serve, custom_script, empty_dir):
    return serve(model_dir=empty_dir, entry_script=custom_script)


def test_a_plain_entry_script_is_described_generically(plain):
    response = plain.get("/v2/models/model")

    assert response.status_code == 200
    assert response.json() == {
        "name": "model", "versions": [], "platform": "azureml_entry_script",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, -1]}],
        "outputs": [{"name": "output-0", "datatype": "FP64", "shape": [-1]}],
    }


@pytest.mark.parametrize(("datatype", "out_type", "rows", "expected"), [
    ("FP64", "FP64", [[1.5, 2.0, 3.0], [4.0, 5.0, 6.5]], [6.5, 15.5]),
    ("FP32", "FP64", [[0.5, 0.25]], [0.75]),
    ("INT64", "INT64", [[1, 2], [3, 4], [5, 6]], [3, 7, 11]),
])
def test_infer_on_a_plain_entry_script_goes_through_run_with_data_rows(plain, datatype, out_type, rows, expected):
    response = plain.post("/v2/models/model/infer", json={"id": "p", "inputs": [tensor(rows, datatype=datatype)]})

    assert response.status_code == 200, response.text
    assert response.json() == {"model_name": "model", "model_version": None, "id": "p", "outputs": [
        {"name": "output-0", "datatype": out_type, "shape": [len(rows)], "data": expected}]}


def test_infer_on_a_plain_entry_script_with_two_inputs_answers_422(plain, assert_error):
    request = {"inputs": [tensor([[1.0]], name="a"), tensor([[2.0]], name="b")]}

    message = assert_error(plain.post("/v2/models/model/infer", json=request), 422, "InvalidInput")

    assert message == "this model takes exactly one input tensor"
