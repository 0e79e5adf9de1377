"""POST /score, the Azure ML endpoint: the body goes to the entry script's run() as a string."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

ROW = [0.01] * 10


def test_score_answers_the_models_predictions_for_the_sample_request(serve, diabetes_dir, ridge, sample_rows):
    service = serve()

    response = service.post("/score", content=(diabetes_dir / "sample-request.json").read_bytes(),
                            headers={"content-type": "application/json"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    result = response.json()["result"]
    np.testing.assert_allclose(result, ridge.predict(sample_rows), rtol=0, atol=1e-6)
    expected = json.loads((diabetes_dir / "sample-response.json").read_text())["result"]
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)


def test_score_takes_integer_features_and_one_prediction_per_row(serve, ridge):
    rows = [[1] * 10, [0] * 10, [-2] * 10]

    response = serve().post("/score", json={"data": rows})

    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["result"], ridge.predict(np.asarray(rows, dtype=float)), atol=1e-6)


@pytest.mark.parametrize("body", [b"not json", b"", b"{", b'{"data": [[1, 2]]', b"NaN", b'{"data": [[1e400]]}',
                                  b"{'data': [[1]]}"],
                         ids=["text", "empty", "open-brace", "unclosed", "nan", "overflowing-number", "single-quotes"])
def test_score_with_a_body_that_is_not_json_answers_400(serve, assert_error, body):
    message = assert_error(serve().post("/score", content=body), 400, "BadRequest")

    assert "not valid JSON" in message


@pytest.mark.parametrize("body", [b"\xff\xfe\x00", '{"data": [[1.0]]}'.encode("utf-16"), b'{"data": "\xe9"}'],
                         ids=["garbage", "utf-16", "latin-1"])
def test_score_with_a_body_that_is_not_utf8_answers_400(serve, assert_error, body):
    message = assert_error(serve().post("/score", content=body), 400, "BadRequest")

    assert "not UTF-8" in message


@pytest.mark.parametrize(("body", "says"), [
    ({"data": [1, 2]}, "non-empty list of rows"),
    ({"data": [ROW, ROW[:5]]}, "rows of equal length"),
    ({"data": [["a"] * 10]}, "numbers only"),
    ({"data": [ROW[:9] + ["0.5"]]}, "numbers only"),
    ({"data": [[True] * 10]}, "numbers only"),
    ({"data": [ROW[:9] + [None]]}, "numbers only"),
    ({"data": []}, "non-empty list of rows"),
    ({"data": [[]]}, "10 features"),
    ({"data": [[ROW]]}, "non-empty list of rows"),
    ({"data": 3}, "non-empty list of rows"),
    ({"data": None}, "numbers only"),
    ({"data": {"x": ROW}}, "numbers only"),
    ({"rows": [ROW]}, '"data" key'),
    ([ROW], '"data" key'),
    ("data", '"data" key'),
    (None, '"data" key'),
    (42, '"data" key'),
], ids=["flat-list", "ragged-rows", "strings", "a-numeric-string", "booleans", "a-null", "empty-list", "empty-row",
        "three-dimensional", "a-number", "null", "an-object", "missing-data", "a-list-body", "a-string-body",
        "a-null-body", "a-number-body"])
def test_score_with_the_wrong_shape_or_type_answers_422(serve, assert_error, body, says):
    message = assert_error(serve().post("/score", content=orjson.dumps(body)), 422, "InvalidInput")

    assert says in message


@pytest.mark.parametrize("width", [1, 9, 11, 100])
def test_score_with_the_wrong_feature_count_answers_422(serve, assert_error, width):
    response = serve().post("/score", json={"data": [[0.1] * width, [0.2] * width]})

    assert assert_error(response, 422, "InvalidInput") == f"each row must have 10 features; got {width}"


def test_score_with_a_body_over_max_body_bytes_answers_413(serve, diabetes_dir, assert_error):
    sample = (diabetes_dir / "sample-request.json").read_bytes()
    service = serve(max_body_bytes=len(sample) - 1)

    message = assert_error(service.post("/score", content=sample), 413, "PayloadTooLarge")

    assert f"body of {len(sample)} bytes is over the limit of {len(sample) - 1}" == message
    assert service.access_log()[-1]["bytes_in"] == 0  # refused on its content-length, before reading it


def test_score_with_a_streamed_body_over_max_body_bytes_answers_413(serve, diabetes_dir, assert_error):
    sample = (diabetes_dir / "sample-request.json").read_bytes()
    service = serve(max_body_bytes=len(sample) - 1)

    async def chunks():
        for i in range(0, len(sample), 100):
            yield sample[i:i + 100]

    response = service.post("/score", content=chunks())

    assert "content-length" not in response.request.headers  # chunked: only counting the bytes can catch it
    assert assert_error(response, 413, "PayloadTooLarge") == f"body is over the limit of {len(sample) - 1} bytes"


def test_score_with_a_body_of_exactly_max_body_bytes_is_scored(serve, diabetes_dir, ridge, sample_rows):
    sample = (diabetes_dir / "sample-request.json").read_bytes()
    service = serve(max_body_bytes=len(sample))

    async def chunks():
        for i in range(0, len(sample), 100):
            yield sample[i:i + 100]

    for content in (sample, chunks()):
        response = service.post("/score", content=content)
        assert response.status_code == 200
        np.testing.assert_allclose(response.json()["result"], ridge.predict(sample_rows), atol=1e-6)


def test_score_before_the_model_is_ready_answers_503(serve, gate, gated_script, empty_dir, assert_error):
    service = serve(model_dir=empty_dir, entry_script=gated_script, wait=False)
    assert gate.entered.wait(10)

    message = assert_error(service.post("/score", json={"data": [ROW]}), 503, "ModelNotReady")

    assert message == "model is loading"


def test_score_with_a_model_that_failed_to_load_answers_503_with_the_reason(serve, empty_dir, assert_error):
    service = serve(model_dir=empty_dir)

    message = assert_error(service.post("/score", json={"data": [ROW]}), 503, "ModelNotReady")

    assert message.startswith("model is failed: FileNotFoundError: no model file")


# -- custom entry scripts ------------------------------------------------------------------------------------
@pytest.fixture
def custom(serve, custom_script, empty_dir):
    return serve(model_dir=empty_dir, entry_script=custom_script, scoring_timeout_s=0.2)


@pytest.mark.parametrize("body", [b"raise", b"value-error", b"not-json-result"])
def test_score_answers_500_when_the_entry_script_fails(custom, assert_error, body):
    message = assert_error(custom.post("/score", content=body), 500, "ScoringFailed")

    assert "blew up" not in message  # the details go to the server log, not to the caller


def test_a_tuple_from_run_is_answered_as_a_json_array(custom):
    response = custom.post("/score", content=b"tuple-result")

    assert response.status_code == 200
    assert response.json() == ["a", 2]


def test_score_answers_400_when_a_custom_run_cannot_parse_the_body(custom, assert_error):
    message = assert_error(custom.post("/score", content=b"{oops"), 400, "BadRequest")

    assert "not valid JSON" in message


def test_score_answers_422_when_the_entry_script_raises_invalid_input(custom, assert_error):
    message = assert_error(custom.post("/score", content=b"invalid"), 422, "InvalidInput")

    assert message == "the script refuses this input"


def test_score_answers_504_when_run_overruns_the_scoring_timeout_and_the_next_request_is_fine(custom, assert_error):
    message = assert_error(custom.post("/score", content=b"spin"), 504, "ScoringTimeout")

    assert message == "scoring took longer than 0.2 s"
    assert custom.post("/score", json={"data": [[1, 2], [3, 4]]}).json() == {"result": [3, 7]}
    assert custom.get("/readyz").status_code == 200


def test_run_receives_the_request_headers_title_cased_like_azure_ml(custom):
    response = custom.post("/score", json={"hello": "world"},
                           headers={"x-ms-client-request-id": "abc", "Authorization": "Bearer t0ken"})

    assert response.status_code == 200
    echo = response.json()
    assert echo["echo"] == {"hello": "world"}
    headers = echo["headers"]
    assert headers["X-Ms-Client-Request-Id"] == "abc"
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(response.request.content))
    assert all(name == name.title() for name in headers)
