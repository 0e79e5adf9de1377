"""A model registered in the local MLflow registry, end to end on the real stack: the data scientist's pipeline
(samples/diabetes/register.py, the real MLflow library) registers a version; the bridge sends ModelRegistered;
ShipBot builds the head commit with that version's MLflow folder (skops weights), smoke-tests it with the
model's input example, and rolls it out to staging, where it serves the registered model. The version an alias
is moved to is found by reconcile (no event says so); a version that is no servable model is skipped with
its reason and builds nothing; the quality gate stops a worse version, and an override ships it."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from release_stack import ROOT, Bot
from test_release_flow import stack_daemons  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
MLFLOW = "http://127.0.0.1:5050"
PYTHON = str(Path(os.environ.get("SHIPBOT_STATE", "/var/lib/shipbot")) / "mlflow" / "venv" / "bin" / "python")


def register(name: str, *, alpha: float = 1.0, alias: str | None = None) -> dict:
    """The data scientist's side: train, log and register with the real MLflow library."""
    done = subprocess.run([PYTHON, str(ROOT / "samples/diabetes/register.py"), "--uri", MLFLOW, "--name", name,
                           "--alpha", str(alpha), *(["--alias", alias] if alias else [])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


FIXTURE = ROOT / "tests" / "fixtures" / "mlflow" / "sklearn-skops"  # what mlflow.sklearn.save_model wrote


def register_files(name: str, files: dict[str, bytes] | None = None, *, alias: str | None = None) -> str:
    """A version whose artifacts are `files` (default: the fixture's MLflow folder), registered through MLflow's
    REST API as log_model does (a run, its artifacts, a version of it): seconds faster than the library."""
    files = files if files is not None else {p.name: p.read_bytes() for p in FIXTURE.iterdir() if p.is_file()}
    http = httpx.Client(base_url=f"{MLFLOW}/api/2.0", timeout=30)
    http.post("/mlflow/registered-models/create", json={"name": name})  # 400 when it exists: fine
    run = http.post("/mlflow/runs/create", json={"experiment_id": "0"}).raise_for_status().json()["run"]["info"]
    source = f"{run['artifact_uri']}/model"
    for rel, data in files.items():
        http.put(f"/mlflow-artifacts/artifacts/{source.removeprefix('mlflow-artifacts:/')}/{rel}",
                 content=data).raise_for_status()
    version = http.post("/mlflow/model-versions/create", json={"name": name, "source": source,
                                                               "run_id": run["run_id"]}).raise_for_status()
    number = version.json()["model_version"]["version"]
    if alias:
        http.post("/mlflow/registered-models/alias", json={"name": name, "alias": alias,
                                                           "version": number}).raise_for_status()
    return number


def predictions(port: int, rows: list[list[float]]) -> list[float]:
    return httpx.post(f"http://127.0.0.1:{port}/score", json={"data": rows}, timeout=10).json()["result"]


@pytest.fixture
def registry_bot(tmp_path, stack_daemons):  # noqa: F811
    name = f"diabetes-{uuid.uuid4().hex[:8]}"
    bot = Bot(tmp_path, env={"SHIPBOT_MODEL_SOURCE": "mlflow", "SHIPBOT_MODEL_NAME": name,
                             "SHIPBOT_MLFLOW_URI": MLFLOW}).start()
    bot.commit_and_push("the app")
    yield bot, name
    bot.stop()


def test_a_registered_version_is_built_smoke_tested_with_its_input_example_and_served_on_staging(registry_bot):
    bot, name = registry_bot

    first = register(name)

    release = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == first["version"],
                               what=f"a release of {name}/{first['version']}")
    assert release["trigger"] == f"model {name}/{first['version']} registered"
    assert release["model"]["blob_name"] == f"models:/{name}/{first['version']}"
    settled = bot.wait_settled(release["id"])
    assert settled["status"] == "green", settled.get("reason")
    bot.wait_running("staging", release["id"])
    version = bot.version("staging")
    assert (version["model_name"], version["model_version"]) == (name, first["version"])
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=0)
    np.testing.assert_allclose(predictions(bot.ports["staging"], X_test[:3].tolist()),
                               Ridge(alpha=1.0).fit(X_train, y_train).predict(X_test[:3]), rtol=1e-9)


def test_an_alias_moved_to_another_version_is_released_by_reconcile(tmp_path, stack_daemons):  # noqa: F811
    name = f"diabetes-{uuid.uuid4().hex[:8]}"
    one = {"version": register_files(name, alias="champion")}
    files = {p.name: p.read_bytes() for p in FIXTURE.iterdir() if p.is_file()}
    two = {"version": register_files(name, {**files, "conda.yaml": b"name: another environment\n"})}
    bot = Bot(tmp_path, env={"SHIPBOT_MODEL_SOURCE": "mlflow", "SHIPBOT_MODEL_NAME": name, "SHIPBOT_MLFLOW_URI": MLFLOW,
                             "SHIPBOT_MODEL_ALIAS": "champion"}).start()
    try:
        bot.commit_and_push("the app")
        first = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == one["version"],
                                 what="the champion's release")
        httpx.post(f"{MLFLOW}/api/2.0/mlflow/registered-models/alias",
                   json={"name": name, "alias": "champion", "version": two["version"]}).raise_for_status()
        bot.fire("reconcile")
        second = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == two["version"],
                                  what="the release of the version the alias moved to")
        assert second["trigger"] == "reconcile timer" and second["id"] != first["id"]
    finally:
        bot.stop()


def test_a_version_that_is_no_mlflow_model_builds_nothing_and_the_log_says_why(registry_bot):
    bot, name = registry_bot
    good = {"version": register_files(name)}
    release = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == good["version"], what="release")
    bot.wait_running("staging", release["id"])
    bad_version = register_files(name, {"weights.bin": b"not a model"})

    bot.wait(lambda: f"{name}/{bad_version} is skipped: model {name}/{bad_version} has no MLmodel" in bot.host_log(),
             what="the skipped version's reason in the log")
    assert [r["model"]["version"] for r in bot.releases()] == [good["version"]]
    assert bot.environments()["staging"]["current"]["release_id"] == release["id"]


def test_a_custom_pyfunc_version_is_built_with_its_own_requirements_and_served_by_mlflows_loader(registry_bot):
    """A python_function model with code of its own (tests/fixtures/mlflow/pyfunc-custom: a PythonModel that clips
    a Ridge's answers): the image installs mlflow-skinny and the model's pins, and MLflow loads the model."""
    bot, name = registry_bot
    folder = ROOT / "tests" / "fixtures" / "mlflow" / "pyfunc-custom"

    version = register_files(name, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})

    release = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == version, what="the pyfunc release")
    settled = bot.wait_settled(release["id"])
    assert settled["status"] == "green", settled.get("reason")
    bot.wait_running("staging", release["id"])
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)  # the fixture's Ridge was fitted on the same rows (as a DataFrame)
    expected = np.clip(Ridge(alpha=0.5).fit(X, y).predict(X[:5]), 25.0, 346.0)
    np.testing.assert_allclose(predictions(bot.ports["staging"], X[:5].tolist()), expected, rtol=1e-9)
    extreme = predictions(bot.ports["staging"], [[1.0] * 10])  # far outside the data: the model's own code clips it
    assert extreme == [346.0]


def test_the_quality_gate_stops_a_worse_registered_version_and_an_override_lets_it_go_on(tmp_path, stack_daemons):  # noqa: F811
    """samples/mlflow-app's gate (rmse on held-out rows, tolerance 0.5) on the real stack: the first version is
    the baseline in production, a worse one fails with both figures and goes nowhere, an override ships it."""
    name = f"diabetes-{uuid.uuid4().hex[:8]}"
    bot = Bot(tmp_path, app=ROOT / "samples" / "mlflow-app",
              env={"SHIPBOT_MODEL_SOURCE": "mlflow", "SHIPBOT_MODEL_NAME": name, "SHIPBOT_MLFLOW_URI": MLFLOW})
    bot.start()
    try:
        import shutil

        shutil.copytree(ROOT / "model_api", bot.work / "model_api", ignore=shutil.ignore_patterns("__pycache__"))
        bot.commit_and_push("model_api with a quality gate")
        good = {"version": register_files(name)}  # Ridge(alpha=0.5): rmse 57.0 on the held-out rows
        first = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == good["version"], what="first")
        bot.wait_running("staging", first["id"])
        assert bot.api("POST", "/api/environments/production/promote",
                       json={"release_id": first["id"], "reason": "the baseline"}).status_code == 202
        bot.wait_running("production", first["id"])
        baseline = bot.release(first["id"])["evaluation"]
        assert baseline["passed"] and baseline["rows"] == 89 and 50 < baseline["value"] < 65

        worse = ROOT / "tests" / "fixtures" / "mlflow" / "worse-skops"  # Ridge(alpha=10): rmse 65.7
        bad = {"version": register_files(name, {p.name: p.read_bytes() for p in worse.iterdir() if p.is_file()})}
        worse = bot.wait_release(lambda r: (r.get("model") or {}).get("version") == bad["version"], what="worse")
        worse = bot.wait_settled(worse["id"])

        assert worse["status"] == "failed" and worse["deployed"] == []
        figures = worse["evaluation"]
        assert (figures["baseline"], figures["baseline_release"]) == (baseline["value"], first["id"])
        assert figures["value"] > baseline["value"] + 0.5 and not figures["passed"]
        assert worse["reason"].startswith(f"quality gate: rmse {figures['value']:.6g} against production's "
                                          f"({first['id']}) {baseline['value']:.6g}: worse by")
        assert bot.environments()["staging"]["current"]["release_id"] == first["id"]

        answer = bot.api("POST", f"/api/releases/{worse['id']}/override", json={"reason": "accepted by hand"})
        assert answer.status_code == 202, answer.text
        bot.wait_running("staging", worse["id"])
        overridden = bot.release(worse["id"])
        assert overridden["status"] == "green" and overridden["evaluation"]["override_reason"] == "accepted by hand"

        # A commit with other held-out rows: production's figure is of another set, so its image is scored now.
        held_out = bot.work / "eval" / "diabetes-test.csv"
        held_out.write_text("".join(held_out.read_text().splitlines(keepends=True)[:80]))  # the header and 79 rows
        bot.commit_and_push("fewer held-out rows")
        third = bot.wait_release(lambda r: r["id"] not in (first["id"], worse["id"]), what="the new commit's release")
        third = bot.wait_settled(third["id"])

        figures = third["evaluation"]
        assert third["status"] == "failed" and figures["rows"] == 79 and figures["baseline_release"] == first["id"]
        assert figures["baseline"] != baseline["value"]  # production's image on these 79 rows, not its record
        assert f"against production's ({first['id']}, scored now)" in third["reason"]
        assert bot.release(first["id"])["evaluation"]["rows"] == 89  # production's own figures stay as they were
    finally:
        bot.stop()
