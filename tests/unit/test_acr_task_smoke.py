"""AcrTaskSmokeRunner against the fake ARM endpoint of ACR Tasks (real SDK client, real HTTPS, logs in real
Azurite), with the runs' outcomes and logs scripted by the test; and the check script it ships, run by a real
python against a stand-in for model_api. tests/integration/test_acr_tasks_docker.py runs the task itself on
the Docker engine against real release images."""

from __future__ import annotations

import base64
import http.server
import json
import shlex
import subprocess
import sys
import threading

import pytest

from shared import contract, errors, ports
from shared.adapters.memory import MemoryRegistry
from shared.adapters.azure import acr_runs, acr_smoke_check
from shared.adapters.azure.acr_task_smoke import CHECK_SCRIPT, AcrTaskSmokeRunner, parse_verdict
from shared.contract import first_difference
from tests.fakes import arm_acr

REF = "shipbotacr.azurecr.test/shipbot/app@sha256:" + "5" * 64
EXPECTED = ports.Expectation("r-1", model_sha256="f" * 64, commit="c" * 40)


def verdict_line(passed: bool, reason: str = "", steps=(("ready", 1.5), ("version", 0.01), ("score", 0.02))) -> str:
    return "SHIPBOT-SMOKE " + json.dumps({"passed": passed, "reason": reason, "steps": [list(s) for s in steps]})


class FakeTime:
    """clock and sleep for the runner: sleeping moves the clock, so waiting takes no time."""

    def __init__(self) -> None:
        self.now, self.slept = 1000.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake():
    with arm_acr.FakeAcr() as fake:
        yield fake


@pytest.fixture
def time_():
    return FakeTime()


def runner(fake: arm_acr.FakeAcr, time_: FakeTime, **options) -> AcrTaskSmokeRunner:
    options = {"budget_seconds": 90, "run_timeout_seconds": 600, "poll_seconds": 5, **options}
    return AcrTaskSmokeRunner(client=fake.client(), resource_group=arm_acr.RESOURCE_GROUP,
                              registry_name=arm_acr.REGISTRY, clock=time_.clock, sleep=time_.sleep, **options)


def test_the_task_runs_the_image_detached_by_digest_then_the_check_inside_the_same_image(fake, time_):
    fake.outcome = arm_acr.finish(acr_runs.SUCCEEDED, log=verdict_line(True))

    runner(fake, time_, budget_seconds=90).run(REF, EXPECTED)

    sent = fake.last_run().request
    assert sent["type"] == "EncodedTaskRunRequest" and sent["timeout"] == 600
    app, check = fake.last_run().task["steps"]
    assert (app["id"], app["cmd"], app["detach"], app["env"]) == ("app", REF, True, ["MODEL_API_WORKERS=1"])
    assert check["id"] == "check" and check["timeout"] == 150 and not check.get("detach")
    image, python, dash_c, code, script, config = shlex.split(check["cmd"])  # as ACR's agent splits it
    assert (image, python, dash_c) == (REF, "python", "-c")
    assert code == "import base64,sys;exec(base64.b64decode(sys.argv[1]))"
    assert base64.b64decode(script) == CHECK_SCRIPT.read_bytes()
    assert json.loads(base64.b64decode(config)) == {
        "url": "http://app:5001", "budget": 90, "model_dir": "/var/azureml-app/model", "release_id": "r-1",
        "model_sha256": "f" * 64, "commit": "c" * 40}
    assert "SHIPBOT-SMOKE" not in base64.b64decode(sent["encodedTaskContent"]).decode()  # only the log has it


def test_acrs_minimum_run_timeout_is_respected(fake, time_):
    fake.outcome = arm_acr.finish(acr_runs.SUCCEEDED, log=verdict_line(True))

    runner(fake, time_, run_timeout_seconds=120).run(REF, EXPECTED)

    assert fake.last_run().request["timeout"] == 300


def test_a_run_that_succeeds_with_a_passing_verdict_passes_with_its_steps(fake, time_):
    fake.outcome = arm_acr.finish(acr_runs.SUCCEEDED, log=f"2026/03/01 step check\n{verdict_line(True)}\nRun ID: cf1 was successful\n")

    verdict = runner(fake, time_).run(REF, EXPECTED)

    assert (verdict.passed, verdict.reason) == (True, "")
    assert [name for name, _ in verdict.steps] == ["queue", "ready", "version", "score"]
    assert time_.slept == [5]  # Queued, then Running, then Succeeded: polled twice after scheduling


def test_a_failed_run_takes_its_reason_from_the_verdict_line(fake, time_):
    reason = "/version reports release r-0, expected r-1"
    fake.outcome = arm_acr.finish(acr_runs.FAILED, error="failed during run, err: exit status 1",
                                  log=verdict_line(False, reason, steps=(("ready", 1.0), ("version", 0.1))))

    verdict = runner(fake, time_).run(REF, EXPECTED)

    assert (verdict.passed, verdict.reason) == (False, reason)


def test_a_passing_verdict_in_a_run_that_did_not_succeed_is_red(fake, time_):
    fake.outcome = arm_acr.finish(acr_runs.FAILED, log=verdict_line(True))

    verdict = runner(fake, time_).run(REF, EXPECTED)

    assert verdict.passed is False and verdict.reason == "smoke run cf1 ended Failed after its check passed"


def test_a_failed_run_without_a_verdict_is_red_with_acrs_error_and_the_logs_last_lines(fake, time_):
    fake.outcome = arm_acr.finish(acr_runs.FAILED, error="failed during run, err: exit status 139",
                                  log="Executing step ID: check\nSegmentation fault (core dumped)\n")

    verdict = runner(fake, time_).run(REF, EXPECTED)

    assert verdict.passed is False
    assert verdict.reason == ("smoke run cf1 ended Failed with no verdict: failed during run, err: exit status 139; "
                              "Executing step ID: check | Segmentation fault (core dumped)")


def test_a_run_that_acr_timed_out_is_red(fake, time_):
    fake.outcome = arm_acr.time_out(log="Executing step ID: check\n")

    verdict = runner(fake, time_, run_timeout_seconds=400).run(REF, EXPECTED)

    assert (verdict.passed, verdict.reason) == (False, "smoke run cf1 timed out (run timeout 400 s)")


def test_a_run_still_running_at_the_deadline_is_cancelled_and_red_without_waiting_for_real(fake, time_):
    fake.outcome = arm_acr.never_finish(acr_runs.RUNNING)

    verdict = runner(fake, time_, run_timeout_seconds=600, poll_seconds=70).run(REF, EXPECTED)

    assert (verdict.passed, verdict.reason) == (False, "smoke run cf1 did not finish within 600 s (cancelled)")
    assert sum(time_.slept) == pytest.approx(600) and time_.slept[0] == 70 and time_.slept[-1] == 40
    assert fake.run("cf1").status == acr_runs.CANCELED


def test_a_run_acr_never_started_is_a_transient_error(fake, time_):
    fake.outcome = arm_acr.never_finish(acr_runs.QUEUED)

    with pytest.raises(errors.TransientError, match="did not start smoke run cf1 within 600 s"):
        runner(fake, time_, poll_seconds=60).run(REF, EXPECTED)
    assert fake.run("cf1").status == acr_runs.CANCELED


def test_an_image_the_run_could_not_pull_is_not_found(fake, time_):
    fake.outcome = arm_acr.finish(acr_runs.FAILED, log=f"docker: Error response from daemon: manifest for {REF} "
                                                       "not found: manifest unknown: manifest unknown.\n")

    with pytest.raises(errors.NotFound, match="is not in the registry"):
        runner(fake, time_).run(REF, EXPECTED)


def test_arm_refusing_the_run_is_a_permanent_error_and_its_outage_a_transient_one(fake, time_):
    fake.refuse.append((400, "InvalidParameter"))
    with pytest.raises(errors.PermanentError, match="400.*InvalidParameter"):
        runner(fake, time_).run(REF, EXPECTED)

    fake.refuse.append((500, "InternalServerError"))
    with pytest.raises(errors.TransientError, match="500"):
        runner(fake, time_).run(REF, EXPECTED)


def test_the_last_verdict_line_counts_and_garbled_ones_are_skipped():
    text = "\n".join([verdict_line(False, "first try"), verdict_line(True), "SHIPBOT-SMOKE {not json", "done"])

    assert parse_verdict(text) == (True, "", (("ready", 1.5), ("version", 0.01), ("score", 0.02)))
    assert parse_verdict("no verdict here\n") is None


# -- the check script, run by a real python against a stand-in for model_api ----------------------------------
class ModelApi(http.server.ThreadingHTTPServer):
    """Answers /readyz, /version and /score as model_api does, with what a test sets."""

    def __init__(self) -> None:
        self.ready, self.version, self.score = (200, {"status": "ready"}), {"release_id": "r-1"}, {"result": [3.0]}
        super().__init__(("127.0.0.1", 0), _ModelApiHandler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ModelApiHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        routes = getattr(self.server, "routes", {})
        status, body = routes.get(self.path) or (self.server.ready if self.path == "/readyz" else (200, self.server.version))
        self._send(status, body)

    def do_POST(self) -> None:
        self.server.posted = (self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        answer = getattr(self.server, "routes", {}).get(self.path, (200, self.server.score))
        if callable(answer):  # a route that answers by what was posted: (status, body)
            answer = answer(self.server.posted[1])
        self._send(*(answer[0], answer[1](self.server.posted[1])) if callable(answer[1]) else answer)

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def model_api():
    server = ModelApi()
    yield server
    server.shutdown()
    server.server_close()


def run_check(model_api: ModelApi, model_dir, **config) -> tuple[int, str]:
    """Runs the script exactly as the task's check step does: python -c "<exec of argv[1]>" <script> <config>."""
    config = {"url": model_api.url, "budget": 5, "model_dir": str(model_dir), "release_id": "r-1",
              "model_sha256": None, "commit": None, **config}
    encoded = [base64.b64encode(data).decode() for data in (CHECK_SCRIPT.read_bytes(), json.dumps(config).encode())]
    done = subprocess.run([sys.executable, "-c", "import base64,sys;exec(base64.b64decode(sys.argv[1]))", *encoded],
                          capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "sample-request.json").write_text('{"data": [[1, 2]]}')
    (tmp_path / "sample-response.json").write_text('{"result": [3.0]}')
    return tmp_path


@pytest.mark.parametrize(("change", "reason"), [
    ({}, ""),
    ({"version": {"release_id": "r-0"}}, "/version reports release r-0, expected r-1"),
    ({"score": {"result": [4.0]}}, "score differs from sample-response.json at result[0]: 4.0 vs 3.0 expected"),
    ({"ready": (503, {"status": "failed", "error": "bad pickle"})}, "/readyz reports the model failed to load: bad pickle"),
])
def test_the_check_script_passes_a_good_service_and_names_the_first_problem(model_api, model_dir, change, reason):
    for name, value in change.items():
        setattr(model_api, name, value)

    code, out = run_check(model_api, model_dir)

    assert parse_verdict(out)[:2] == (not reason, reason)
    assert code == (0 if not reason else 1)


def test_the_check_script_gives_up_on_readyz_within_its_budget(model_api, model_dir):
    model_api.ready = (503, {"status": "loading"})

    code, out = run_check(model_api, model_dir, budget=1)

    assert code == 1
    assert parse_verdict(out)[1] == '/readyz did not answer 200 within 1 s (last answer: 503 {"status": "loading"})'


def test_the_check_script_fails_an_image_without_its_sample_files(model_api, tmp_path):
    code, out = run_check(model_api, tmp_path)

    assert code == 1 and parse_verdict(out)[1].startswith("the image has no ")


@pytest.mark.parametrize(("score", "reason"), [
    ({"result": [3.0]}, ""),
    ({"result": [3.0, 4.0]}, "POST /score: 'result' holds 2 predictions for 1 rows"),
    ({"prediction": [3.0]}, "POST /score: the answer has no 'result' list: {\"prediction\": [3.0]}"),
    ({"result": [None]}, "POST /score: 'result' holds something that is not a prediction: [null]"),
])
def test_a_model_with_no_sample_response_must_answer_one_prediction_per_row(model_api, tmp_path, score, reason):
    (tmp_path / "sample-request.json").write_text('{"data": [[1, 2]]}')  # an MLflow model's input example
    model_api.score = score

    code, out = run_check(model_api, tmp_path)

    assert parse_verdict(out)[:2] == (not reason, reason)


@pytest.mark.parametrize(("scored", "sample"), [
    ({"result": [1.0]}, {"data": [[1, 2]]}),
    ({"result": [1.0]}, {"data": [[1, 2], [3, 4]]}),
    ({"result": ["a", [1, 2]]}, {"data": [[1], [2]]}),
    ({"result": [float("nan")]}, {"data": [[1]]}),
    ({"result": [True]}, {"data": [[1]]}),
    ({"result": {"a": 1}}, {"data": [[1]]}),
    ([1.0], {"data": [[1]]}),
])
def test_the_check_script_counts_predictions_as_the_local_runner_does(scored, sample):
    assert acr_smoke_check.per_row(scored, sample) == contract.per_row(scored, sample)


@pytest.mark.parametrize(("got", "wanted"), [
    ({"result": [1.0, 2.0]}, {"result": [1.0, 2.0]}),
    ({"result": [100.0000001]}, {"result": [100.0]}),
    ({"result": [1.0, 2.0, 3.0, 1.0]}, {"result": [1.0, 2.0, 3.0, 2.0]}),
    ({"result": [1.0]}, {"result": [1.0, 2.0]}),
    ({"other": 1}, {"result": [1]}),
    ({"result": "1.0"}, {"result": [1.0]}),
    ({"result": [True]}, {"result": [1]}),
    ([1, 2], [1, 3]),
    ({"result": [[1, 2], [3, 5]]}, {"result": [[1, 2], [3, 4]]}),
])
def test_the_check_script_compares_scores_as_the_local_runner_does(got, wanted):
    assert acr_smoke_check.first_difference(got, wanted) == first_difference(got, wanted)


# -- an image that declares its smoke contract: checked from ShipBot's check image ------------------------------
APP_CONTRACT = contract.Contract(port=5000, ready_path="/healthcheck", identity_path="/about", score_path="/predict",
                                 request={"rows": [[1, 2]]}, expect_status=201, expect_keys=("y",), own=True)


def registry_with(labels: dict[str, str]) -> MemoryRegistry:
    registry = MemoryRegistry(host="shipbotacr.azurecr.test")
    registry.push("shipbot/app", None, REF.rpartition("@")[2], labels=labels)
    return registry


def test_an_image_with_a_contract_is_checked_from_the_check_image_against_its_own_routes(fake, time_):
    fake.outcome = arm_acr.finish(acr_runs.SUCCEEDED, log=verdict_line(True))
    registry = registry_with({contract.LABEL: APP_CONTRACT.label()})

    assert runner(fake, time_, registry=registry, check_image="checker:3").run(REF, EXPECTED).passed

    app, check = fake.last_run().task["steps"]
    assert app["cmd"] == REF  # the release image runs as it is, on the network as "app"
    image, python, *_, config = shlex.split(check["cmd"])
    assert (image, python) == ("checker:3", "python")  # the release image needs no Python
    sent = json.loads(base64.b64decode(config))
    assert sent["url"] == "http://app:5000" and sent["own"] is True
    assert {k: sent[k] for k in ("ready_path", "identity_path", "score_path", "request", "expect_status")} == {
        "ready_path": "/healthcheck", "identity_path": "/about", "score_path": "/predict",
        "request": {"rows": [[1, 2]]}, "expect_status": 201}


def test_an_unusable_contract_label_is_red_before_any_run(fake, time_):
    verdict = runner(fake, time_, registry=registry_with({contract.LABEL: "[1, 2]"})).run(REF, EXPECTED)

    assert not verdict.passed and verdict.reason == "the image's dev.shipbot.contract label is unusable: not a JSON object"
    assert fake.runs == {}


def test_an_image_the_registry_does_not_have_is_not_found_before_any_run(fake, time_):
    with pytest.raises(errors.NotFound):
        runner(fake, time_, registry=MemoryRegistry(host="shipbotacr.azurecr.test")).run(REF, EXPECTED)
    assert fake.runs == {}


@pytest.mark.parametrize(("routes", "reason"), [
    ({}, ""),
    ({"/healthcheck": (503, {"ok": False})}, '/healthcheck did not answer 200 within 1 s (last answer: 503 {"ok": false})'),
    ({"/about": (200, {"release": "r-0"})}, "/about names neither the release r-1 nor the commit None"),
    ({"/predict": (200, {"y": 1})}, 'POST /predict answered 200, expected 201: {"y": 1}'),
    ({"/predict": (201, {"z": 1})}, "POST /predict answered without 'y'"),
])
def test_the_check_script_follows_an_apps_contract(model_api, tmp_path, routes, reason):
    model_api.routes = {"/healthcheck": (200, {"ok": True}), "/about": (200, {"release": "r-1"}),
                        "/predict": (201, {"y": [0.5]}), **routes}
    config = {**json.loads(APP_CONTRACT.label()), "own": True}

    code, out = run_check(model_api, tmp_path / "no-such-folder", budget=1, **config)

    assert parse_verdict(out)[:2] == (not reason, reason)
    assert code == (0 if not reason else 1)
    if not reason:
        assert model_api.posted == ("/predict", {"rows": [[1, 2]]})


# -- the quality gate's evaluation set, scored inside the run -------------------------------------------------
def predictions_line(start: int, predictions: list) -> str:
    return "SHIPBOT-PREDICTIONS " + json.dumps({"start": start, "predictions": predictions})


def test_an_evaluation_set_travels_as_the_runs_source_and_its_answers_come_back_in_row_order(fake, time_):
    import io
    import tarfile

    rows = [[float(i), 1.0] for i in range(5)]
    steps = (("ready", 1.0), ("version", 0.0), ("score", 0.0), ("evaluate", 0.3))
    fake.outcome = arm_acr.finish(acr_runs.SUCCEEDED, log="\n".join([
        "step check", predictions_line(4, [40.0]), predictions_line(0, [0.0, 10.0]),
        predictions_line(2, [20.0, 30.0]), verdict_line(True, steps=steps)]) + "\n")

    verdict = runner(fake, time_).run(REF, EXPECTED, evaluation=ports.Evaluation(rows, batch=2, seconds=30))

    assert verdict.passed, verdict.reason
    assert verdict.predictions == (0.0, 10.0, 20.0, 30.0, 40.0)
    run = fake.last_run()
    with tarfile.open(fileobj=io.BytesIO(fake.source_bytes(run.request["sourceLocation"])), mode="r:gz") as tar:
        sent = json.load(tar.extractfile("shipbot-evaluation.json"))
    assert sent == {"rows": rows, "batch": 2, "seconds": 30}
    config = json.loads(base64.b64decode(shlex.split(run.task["steps"][1]["cmd"])[-1]))
    assert config["evaluation"] == "/workspace/shipbot-evaluation.json"


def test_a_run_that_reports_fewer_predictions_than_rows_is_red(fake, time_):
    fake.outcome = arm_acr.finish(acr_runs.SUCCEEDED, log=predictions_line(0, [1.0]) + "\n" + verdict_line(True))

    verdict = runner(fake, time_).run(REF, EXPECTED, evaluation=ports.Evaluation([[1.0], [2.0]], batch=1))

    assert not verdict.passed and verdict.predictions is None
    assert verdict.reason.endswith("reported 1 predictions for the 2 rows of the evaluation set")


def test_the_check_script_scores_the_evaluation_set_batch_by_batch_and_prints_the_answers(model_api, model_dir):
    model_api.score = lambda body: {"result": [sum(row) for row in body.get("data", [])]}
    rows = [[float(i), 2.0] for i in range(7)]
    (model_dir / "shipbot-evaluation.json").write_text(json.dumps({"rows": rows, "batch": 3, "seconds": 30}))
    (model_dir / "sample-response.json").write_text('{"result": [3.0]}')

    code, out = run_check(model_api, model_dir, evaluation=str(model_dir / "shipbot-evaluation.json"))

    from shared.adapters.azure.acr_task_smoke import parse_predictions

    passed, reason, steps = parse_verdict(out)
    assert (code, passed, reason) == (0, True, "")
    assert [name for name, _ in steps][-1] == "evaluate"
    assert parse_predictions(out) == [sum(row) for row in rows]


def test_the_check_script_names_the_rows_of_a_batch_the_model_refuses(model_api, model_dir):
    refused = (422, {"error": {"message": "each row must have 10 features; got 2"}})
    model_api.routes = {"/score": lambda body: (200, {"result": [3.0]}) if len(body["data"]) == 1 else refused}
    (model_dir / "shipbot-evaluation.json").write_text(json.dumps({"rows": [[1.0, 2.0]] * 4, "batch": 3,
                                                                   "seconds": 30}))

    code, out = run_check(model_api, model_dir, evaluation=str(model_dir / "shipbot-evaluation.json"))

    assert code == 1
    reason = parse_verdict(out)[1]
    assert reason.startswith("evaluation rows 1-3: POST answered 422: ") and "got 2" in reason
