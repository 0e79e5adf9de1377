"""model_api in process: probes, readiness, /version, routing, the error contract, request ids and tracing,
the access log, /metrics. Scoring is in test_model_api_score.py, V2 in test_model_api_v2.py."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from model_api import telemetry
from model_api.app import App
from model_api.settings import BuildInfo, Settings

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
LIVENESS = ["/", "/healthz", "/v2/health/live"]


# -- liveness and readiness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", LIVENESS)
def test_liveness_answers_200_while_the_model_is_still_loading(serve, gate, gated_script, empty_dir, path):
    service = serve(model_dir=empty_dir, entry_script=gated_script, wait=False)
    assert gate.entered.wait(10)

    response = service.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() in ({"status": "alive"}, {"live": True})


def test_readiness_answers_503_while_init_runs_then_200_once_it_returns(serve, gate, gated_script, empty_dir,
                                                                       assert_error):
    service = serve(model_dir=empty_dir, entry_script=gated_script, wait=False)
    assert gate.entered.wait(10)

    response = service.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "loading", "error": None}
    assert service.get("/v2/health/ready").status_code == 503
    assert service.get("/v2/models/model/ready").json() == {"ready": False}
    assert "loading" in assert_error(service.post("/score", content=b"{}"), 503, "ModelNotReady")

    gate.release.set()
    service.wait_loaded()

    response = service.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
    assert service.get("/v2/health/ready").json() == {"ready": True}
    assert service.get("/v2/models/model/ready").status_code == 200
    assert service.post("/score", content=b"hello").json() == {"result": "hello"}


def test_readiness_answers_503_with_the_error_when_init_raises(serve, gate, gated_script, empty_dir, assert_error):
    gate.fail = RuntimeError("no GPU here")
    gate.release.set()
    service = serve(model_dir=empty_dir, entry_script=gated_script)

    response = service.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "failed", "error": "RuntimeError: no GPU here"}
    assert service.get("/v2/health/ready").status_code == 503
    assert service.get("/healthz").status_code == 200  # the server stays up and says why
    message = assert_error(service.post("/score", content=b"{}"), 503, "ModelNotReady")
    assert "failed" in message and "no GPU here" in message


@pytest.mark.parametrize(("source", "error"), [
    ("def run(raw_data):\n    return raw_data\n", "no init() function"),
    ("def init():\n    pass\n", "no run() function"),
    ("def init():\n    pass\ndef run():\n    return 1\n", "run() needs a parameter"),
    ("def init():\n    pass\ndef run(request_headers):\n    return 1\n", "run() needs a parameter"),
    ("def init(:\n", "SyntaxError"),
    ("import not_a_module_anyone_has\n", "ModuleNotFoundError"),
], ids=["no-init", "no-run", "run-without-parameters", "run-with-headers-only", "syntax-error", "import-error"])
def test_an_entry_script_that_cannot_be_served_leaves_the_model_failed(serve, script, empty_dir, source, error):
    service = serve(model_dir=empty_dir, entry_script=script("score.py", source))

    response = service.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "failed"
    assert error in response.json()["error"]


def test_a_missing_entry_script_leaves_the_model_failed(serve, tmp_path, empty_dir):
    service = serve(model_dir=empty_dir, entry_script=tmp_path / "nowhere" / "score.py")

    response = service.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"].startswith("FileNotFoundError")


def test_a_model_whose_warm_up_run_fails_is_not_ready(serve, diabetes_dir, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.joblib").write_bytes((diabetes_dir / "model.joblib").read_bytes())
    (model_dir / "sample-request.json").write_text('{"data": [[1.0, 2.0]]}')  # 2 features, the model takes 10
    service = serve(model_dir=model_dir)

    response = service.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "failed"
    assert "each row must have 10 features" in response.json()["error"]


# -- /version -------------------------------------------------------------------------------------------------
def test_version_reports_the_build_metadata_and_null_for_unknown_fields(serve, diabetes_dir):
    build = BuildInfo(model_name="diabetes", model_version="3", model_sha256="ab" * 32, git_commit="0123abc")
    service = serve(settings=Settings(model_dir=diabetes_dir, model_name="diabetes", build=build), wait=False)

    response = service.get("/version")

    assert response.status_code == 200
    assert response.json() == {
        "model_name": "diabetes", "model_version": "3", "model_sha256": "ab" * 32, "git_commit": "0123abc",
        "image_tag": None, "build_id": None, "release_id": None,
    }


def test_version_of_an_unlabelled_build_is_all_null(serve):
    response = serve(wait=False).get("/version")

    assert response.status_code == 200
    assert set(response.json()) == {"model_name", "model_version", "model_sha256", "git_commit", "image_tag",
                                    "build_id", "release_id"}
    assert set(response.json().values()) == {None}


# -- routing and the error contract --------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/nope"), ("POST", "/nope"), ("GET", "/scores"), ("GET", "/score/"), ("GET", "/v2/models/model/explain"),
    ("GET", "/v2/models/model/versions/1/explain"), ("POST", "/v2/health"),
])
def test_an_unknown_route_answers_404(serve, assert_error, method, path):
    response = serve().request(method, path)

    assert path in assert_error(response, 404, "NotFound")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/score"), ("PUT", "/score"), ("POST", "/healthz"), ("POST", "/readyz"), ("DELETE", "/version"),
    ("POST", "/metrics"), ("GET", "/v2/models/model/infer"), ("POST", "/v2/models/model"),
    ("POST", "/v2/models/model/ready"),
])
def test_a_known_route_with_the_wrong_method_answers_405(serve, assert_error, method, path):
    response = serve().request(method, path)

    assert method in assert_error(response, 405, "MethodNotAllowed")


@pytest.mark.parametrize(("body", "timeout", "status", "code"), [
    (b"\xff\xfe", 60.0, 400, "BadRequest"),
    (b"{not json", 60.0, 400, "BadRequest"),
    (b"x" * 2000, 60.0, 413, "PayloadTooLarge"),
    (b"invalid", 60.0, 422, "InvalidInput"),
    (b"raise", 60.0, 500, "ScoringFailed"),
    (b"not-json-result", 60.0, 500, "ScoringFailed"),
    (b"spin", 0.2, 504, "ScoringTimeout"),
])
def test_every_error_answers_a_json_error_object_and_a_request_id(serve, custom_script, empty_dir, assert_error,
                                                                  body, timeout, status, code):
    service = serve(model_dir=empty_dir, entry_script=custom_script, max_body_bytes=1000,
                    scoring_timeout_s=timeout)

    response = service.post("/score", content=body)

    assert_error(response, status, code)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert int(response.headers["content-length"]) == len(response.content)


# -- request ids and tracing ---------------------------------------------------------------------------------
def test_a_valid_request_id_is_echoed(serve):
    service = serve()

    response = service.get("/healthz", headers={"x-request-id": "caller-id-42/~"})

    assert response.headers["x-request-id"] == "caller-id-42/~"
    assert service.access_log()[-1]["request_id"] == "caller-id-42/~"


@pytest.mark.parametrize("request_id", [None, b"", b"has space", b"x" * 129, "é".encode(), b"tab\there"],
                         ids=["absent", "empty", "space", "too-long", "non-ascii", "control-char"])
def test_a_request_id_is_generated_when_absent_or_invalid(serve, request_id):
    service = serve()
    headers = {} if request_id is None else {"x-request-id": request_id}

    first, second = service.get("/healthz", headers=headers), service.get("/healthz", headers=headers)

    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert [line["request_id"] for line in service.access_log()] == [first.headers["x-request-id"],
                                                                      second.headers["x-request-id"]]


def test_a_valid_traceparent_is_echoed_and_its_trace_id_logged(serve):
    service = serve()

    response = service.get("/healthz", headers={"traceparent": TRACEPARENT})

    assert response.headers["traceparent"] == TRACEPARENT
    assert service.access_log()[-1]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("traceparent", [
    TRACEPARENT.upper(), TRACEPARENT[:-1], TRACEPARENT + "-extra", "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
    "garbage", "",
], ids=["upper-case", "truncated", "trailing-fields", "short-trace-id", "garbage", "empty"])
def test_an_invalid_traceparent_is_not_echoed_nor_logged(serve, traceparent):
    service = serve()

    response = service.get("/healthz", headers={"traceparent": traceparent})

    assert response.status_code == 200
    assert "traceparent" not in response.headers
    assert service.access_log()[-1]["trace_id"] is None


# -- the access log ------------------------------------------------------------------------------------------
def test_the_access_log_has_one_json_line_per_request(serve, diabetes_dir):
    service = serve()
    sample = (diabetes_dir / "sample-request.json").read_bytes()

    responses = [service.post("/score", content=sample), service.get("/nope"),
                 service.post("/score", content=b'{"data": [1, 2]}')]

    lines = service.access_log()
    assert len(lines) == len(responses)
    for line, response, (method, path, route, status, bytes_in) in zip(lines, responses, [
        ("POST", "/score", "/score", 200, len(sample)),
        ("GET", "/nope", "unmatched", 404, 0),
        ("POST", "/score", "/score", 422, 16),
    ], strict=True):
        assert line["level"] == "info" and line["message"] == "request"
        assert (line["method"], line["path"], line["route"], line["status"]) == (method, path, route, status)
        assert line["bytes_in"] == bytes_in
        assert line["bytes_out"] == len(response.content)
        assert line["request_id"] == response.headers["x-request-id"]
        assert line["trace_id"] is None
        assert line["duration_ms"] >= 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_the_access_log_setting_turns_the_default_access_log_off(diabetes_dir):
    assert App(Settings(model_dir=diabetes_dir, access_log=False)).access_log.enabled is False
    assert App(Settings(model_dir=diabetes_dir)).access_log.enabled is True


# -- /metrics -------------------------------------------------------------------------------------------------
def test_metrics_count_each_request_by_route_method_and_status(serve, diabetes_dir, metric_value):
    service = serve()
    sample = (diabetes_dir / "sample-request.json").read_bytes()
    counted = [("/score", "POST", "200"), ("/score", "POST", "422"), ("unmatched", "GET", "404"),
               ("/v2/models/{name}", "GET", "200"), ("/v2/models/{name}/infer", "GET", "405")]
    before = service.metrics()

    service.post("/score", content=sample)
    service.post("/score", content=sample)
    service.post("/score", content=b'{"data": []}')
    service.get("/no/such/route")
    service.get("/v2/models/model")
    service.get("/v2/models/model/infer")
    after = service.metrics()

    increments = [metric_value(after, "model_api_requests_total", route=r, method=m, status=s)
                  - metric_value(before, "model_api_requests_total", route=r, method=m, status=s)
                  for r, m, s in counted]
    assert increments == [2, 1, 1, 1, 1]


def test_metrics_expose_the_latency_histogram_and_the_model_load_time(serve, metric_value):
    service = serve()
    before = service.metrics()

    service.get("/healthz")
    response = service.get("/metrics")
    after = service.metrics()

    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE model_api_request_duration_seconds histogram" in response.text
    count = "model_api_request_duration_seconds_count"
    assert metric_value(after, count, route="/healthz") - metric_value(before, count, route="/healthz") == 1
    assert metric_value(after, "model_api_request_duration_seconds_bucket", route="/healthz", le="+Inf") >= 1
    assert metric_value(after, "model_api_request_duration_seconds_sum", route="/healthz") > 0
    assert metric_value(after, "model_api_model_load_seconds") > 0
    assert metric_value(after, "model_api_model_ready") == 1


def test_metrics_say_the_model_is_not_ready_after_a_failed_load(serve, empty_dir, metric_value):
    service = serve(model_dir=empty_dir)  # the default script finds no model file

    assert service.get("/readyz").status_code == 503
    assert metric_value(service.metrics(), "model_api_model_ready") == 0


def test_a_server_without_lifespan_events_loads_the_model_on_the_first_request(diabetes_dir, tmp_path):
    async def go() -> list[int]:
        app = App(Settings(model_dir=diabetes_dir), access_log=telemetry.AccessLog(enabled=False))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            statuses = [(await client.get("/healthz")).status_code]
            await asyncio.wait_for(app.start(), 30)  # the same loader the first request began
            statuses.append((await client.get("/readyz")).status_code)
        return statuses

    assert asyncio.run(go()) == [200, 200]
