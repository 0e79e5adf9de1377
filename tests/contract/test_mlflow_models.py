"""MlflowModels against a real MLflow server (the local stack's, scripts/local-stack.sh mlflow): which version
each selector releases, the folder digest and its cached tag, streaming downloads, and the versions that are
skipped (no artifacts, no MLmodel, an unknown flavour, too large) with their reason. Versions are registered
through MLflow's own REST API (artifacts uploaded through the server, as `mlflow.log_model` does), and once with
the real MLflow library (samples/diabetes/register.py)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from shared import buildplan, errors, modelfiles
from shared.adapters.mlflow_models import SHA_TAG, MlflowModels, Selector

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "mlflow" / "sklearn-skops"


def folder_files(folder: Path = FIXTURE) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


class Registry:
    """A name of our own on the real server, and MLflow's REST calls to register versions of it."""

    def __init__(self, uri: str) -> None:
        self.uri, self.name = uri, f"test-{uuid.uuid4().hex[:10]}"
        self.http = httpx.Client(base_url=f"{uri}/api/2.0", timeout=30)
        self.http.post("/mlflow/registered-models/create", json={"name": self.name}).raise_for_status()

    def register(self, files: dict[str, bytes]) -> str:
        """A run whose artifacts hold `files` under model/, registered as the next version (MLflow checks that a
        version's source lies in the run it names)."""
        run = self.http.post("/mlflow/runs/create", json={"experiment_id": "0"}).raise_for_status().json()["run"]
        source = f"{run['info']['artifact_uri']}/model"
        for rel, data in files.items():
            path = f"{source.removeprefix('mlflow-artifacts:/')}/{rel}"
            self.http.put(f"/mlflow-artifacts/artifacts/{path}", content=data).raise_for_status()
        answer = self.http.post("/mlflow/model-versions/create", json={
            "name": self.name, "source": source, "run_id": run["info"]["run_id"]}).raise_for_status()
        return answer.json()["model_version"]["version"]

    def tags(self, version: str) -> dict[str, str]:
        doc = self.http.get("/mlflow/model-versions/get", params={"name": self.name, "version": version}).json()
        return {t["key"]: t["value"] for t in doc["model_version"].get("tags", [])}

    def set_tag(self, version: str, key: str, value: str) -> None:
        self.http.post("/mlflow/model-versions/set-tag", json={"name": self.name, "version": version, "key": key,
                                                               "value": value}).raise_for_status()

    def alias(self, alias: str, version: str) -> None:
        self.http.post("/mlflow/registered-models/alias", json={"name": self.name, "alias": alias,
                                                                "version": version}).raise_for_status()

    def stage(self, version: str, stage: str) -> None:
        self.http.post("/mlflow/model-versions/transition-stage", json={
            "name": self.name, "version": version, "stage": stage, "archive_existing_versions": False,
        }).raise_for_status()


@pytest.fixture
def registry(mlflow_uri: str) -> Registry:
    return Registry(mlflow_uri)


def adapter(uri: str, requests: list[str] | None = None, **options) -> MlflowModels:
    hooks = {"request": [lambda r: requests.append(f"{r.method} {r.url.path}")]} if requests is not None else {}
    return MlflowModels(uri=uri, client=httpx.Client(timeout=30, event_hooks=hooks), sleep=lambda s: None, **options)


# -- which version ------------------------------------------------------------------------------------------------
def test_the_newest_registered_version_is_the_one_listed(registry):
    registry.register(folder_files())
    newest = registry.register({**folder_files(), "conda.yaml": b"name: v2\n"})

    (model,) = adapter(registry.uri).list_models((registry.name,))

    assert (model.name, model.version, model.blob_name) == (registry.name, newest, f"models:/{registry.name}/{newest}")


def test_an_alias_releases_the_version_it_points_at_even_an_older_one(registry):
    first = registry.register(folder_files())
    registry.register({**folder_files(), "conda.yaml": b"name: v2\n"})
    registry.alias("champion", first)

    models = adapter(registry.uri, selector=Selector(alias="champion")).list_models((registry.name,))

    assert [m.version for m in models] == [first]
    assert adapter(registry.uri, selector=Selector(alias="nobody")).list_models((registry.name,)) == []


def test_a_stage_releases_its_highest_version(registry):
    first = registry.register(folder_files())
    second = registry.register({**folder_files(), "conda.yaml": b"name: v2\n"})
    registry.register({**folder_files(), "conda.yaml": b"name: v3\n"})
    registry.stage(first, "Staging")
    registry.stage(second, "Staging")

    models = adapter(registry.uri, selector=Selector(stage="Staging")).list_models((registry.name,))

    assert [m.version for m in models] == [second]
    assert adapter(registry.uri, selector=Selector(stage="Production")).list_models((registry.name,)) == []


def test_a_name_the_registry_does_not_know_lists_nothing(registry):
    assert adapter(registry.uri).list_models((f"absent-{uuid.uuid4().hex[:6]}",)) == []
    with pytest.raises(errors.NotFound):
        adapter(registry.uri).get_model(registry.name, "99")


# -- what identifies it -------------------------------------------------------------------------------------------
def test_a_version_is_identified_by_its_folder_digest_computed_once_and_cached_as_a_tag(registry, tmp_path):
    version = registry.register(folder_files())
    requests: list[str] = []

    (model,) = adapter(registry.uri, requests).list_models((registry.name,))

    assert model.sha256 == modelfiles.fingerprint(FIXTURE)
    assert registry.tags(version)[SHA_TAG] == model.sha256
    downloads = [r for r in requests if "/mlflow-artifacts/artifacts/" in r]
    assert len(downloads) == len(folder_files())  # each file streamed once to hash it

    requests.clear()
    assert adapter(registry.uri, requests).list_models((registry.name,)) == [model]
    assert not [r for r in requests if "mlflow-artifacts" in r]  # the tag answers: nothing downloaded again


def test_a_download_writes_every_artifact_and_the_folder_builds_as_the_release_names_it(registry, tmp_path):
    registry.register(folder_files())
    models = adapter(registry.uri)
    (model,) = models.list_models((registry.name,))

    models.download(model, tmp_path / "model")

    assert folder_files(tmp_path / "model") == folder_files()
    planned = buildplan.plan(buildplan.Inputs(source=ROOT, model_dir=tmp_path / "model", image="r/a:t", build_id="b",
                                              model_name=model.name, model_version=model.version,
                                              model_sha256=model.sha256))
    assert planned.build_args["MODEL_RUNTIMES"] == "sklearn mlflow"


def test_a_tag_that_lies_fails_the_download_and_is_corrected_for_the_next_listing(registry, tmp_path):
    version = registry.register(folder_files())
    registry.set_tag(version, SHA_TAG, "0" * 64)
    models = adapter(registry.uri)
    (lied,) = models.list_models((registry.name,))
    assert lied.sha256 == "0" * 64

    with pytest.raises(errors.PermanentError, match="artifacts hash to"):
        models.download(lied, tmp_path / "model")

    (model,) = models.list_models((registry.name,))
    assert model.sha256 == modelfiles.fingerprint(FIXTURE)


# -- what is skipped, and why -------------------------------------------------------------------------------------
@pytest.mark.parametrize("files, says", [
    ({"model.skops": b"weights"}, "has no MLmodel among its artifacts"),
    ({**folder_files(), "MLmodel": b"flavors:\n  keras: {}\n"}, "flavours (keras) are not served"),
    ({**folder_files(), "MLmodel": b"flavors: [\n"}, "while parsing"),
    ({k: v for k, v in folder_files().items() if k != "model.skops"}, "names model.skops as the model"),
], ids=["no-mlmodel", "unknown-flavour", "broken-mlmodel", "no-weights"])
def test_a_version_that_is_no_servable_mlflow_model_is_skipped_with_its_reason(registry, caplog, files, says):
    version = registry.register(files)

    with caplog.at_level(logging.WARNING, logger="shared.adapters.mlflow_models"):
        assert adapter(registry.uri).list_models((registry.name,)) == []

    assert f"{registry.name}/{version} is skipped: model {registry.name}/{version}" in caplog.text
    assert says in caplog.text
    assert SHA_TAG not in registry.tags(version)


def test_a_version_larger_than_the_limit_is_skipped_before_anything_is_downloaded(registry, caplog):
    version = registry.register(folder_files())
    requests: list[str] = []

    with caplog.at_level(logging.WARNING, logger="shared.adapters.mlflow_models"):
        assert adapter(registry.uri, requests, max_bytes=1000).list_models((registry.name,)) == []

    assert "more than the 1,000 a release may carry" in caplog.text
    assert not [r for r in requests if "/mlflow-artifacts/artifacts/" in r]
    with pytest.raises(errors.PermanentError, match=f"{registry.name}/{version}'s artifacts take"):
        adapter(registry.uri, max_bytes=1000).get_model(registry.name, version)


def test_a_version_with_no_artifacts_is_skipped(registry, caplog):
    registry.register({})

    with caplog.at_level(logging.WARNING, logger="shared.adapters.mlflow_models"):
        assert adapter(registry.uri).list_models((registry.name,)) == []
    assert "has no artifacts" in caplog.text


def test_a_registry_that_does_not_answer_is_a_transient_error_after_retries():
    slept: list[float] = []
    models = MlflowModels(uri="http://127.0.0.1:9", sleep=slept.append)

    with pytest.raises(errors.TransientError, match="did not answer: ConnectError"):
        models.list_models(("diabetes",))
    assert len(slept) == 3


def test_a_version_logged_by_the_real_mlflow_library_lists_downloads_and_plans(mlflow_uri, mlflow_python, tmp_path):
    name = f"test-{uuid.uuid4().hex[:10]}"
    done = subprocess.run([mlflow_python, str(ROOT / "samples/diabetes/register.py"), "--uri", mlflow_uri,
                           "--name", name, "--alias", "champion"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    registered = json.loads(done.stdout.strip().splitlines()[-1])
    models = adapter(mlflow_uri, selector=Selector(alias="champion"))

    (model,) = models.list_models((name,))
    models.download(model, tmp_path / "model")

    assert (model.name, model.version) == (name, registered["version"])
    assert modelfiles.fingerprint(tmp_path / "model") == model.sha256
    planned = buildplan.plan(buildplan.Inputs(source=ROOT, model_dir=tmp_path / "model", image="r/a:t", build_id="b",
                                              model_name=name, model_version=model.version,
                                              model_sha256=model.sha256))
    assert planned.build_args["MODEL_RUNTIMES"] == "sklearn mlflow"
    assert len(json.loads((tmp_path / "model" / "sample-request.json").read_text())["data"]) == 2


# -- the local bridge's source of ModelRegistered (stack/registry_watcher.py) -------------------------------------
def test_the_bridge_announces_each_version_once_as_azure_ml_would_and_remembers_across_restarts(registry, tmp_path):
    from shared import events
    from stack.registry_watcher import RegistryWatcher

    topic = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/shipbot-local/providers/"
             "Microsoft.MachineLearningServices/workspaces/local")
    registry.register(folder_files())
    state = tmp_path / "model-registry.json"
    watcher = RegistryWatcher(registry.uri, state, topic=topic)
    assert watcher.poll() == []  # the first look is a baseline
    watcher.save()

    version = registry.register(folder_files())
    restarted = RegistryWatcher(registry.uri, state, topic=topic)
    found = [e for e in restarted.poll() if e["data"]["modelName"] == registry.name]

    (event,) = found
    parsed = events.parse_model_registered(event, workspace=topic)
    assert (parsed.model_name, parsed.model_version) == (registry.name, version)
    assert event["subject"] == f"models/{registry.name}:{version}"
    again = [e for e in restarted.poll() if e["data"]["modelName"] == registry.name]
    assert [e["subject"] for e in again] == [event["subject"]]  # not saved (not in the outbox yet): announced again
    restarted.save()
    assert [e for e in restarted.poll() if e["data"]["modelName"] == registry.name] == []


def test_read_file_answers_an_artifact_of_the_run_that_logged_the_version(registry):
    version = registry.register(folder_files())
    run_id = registry.http.get("/mlflow/model-versions/get", params={"name": registry.name, "version": version}
                               ).json()["model_version"]["run_id"]
    root = registry.http.get("/mlflow/runs/get", params={"run_id": run_id}).json()["run"]["info"]["artifact_uri"]
    registry.http.put(f"/mlflow-artifacts/artifacts/{root.removeprefix('mlflow-artifacts:/')}/eval/test.csv",
                      content=b"a,y\n1,2\n").raise_for_status()
    models = adapter(registry.uri)
    (model,) = models.list_models((registry.name,))

    assert models.read_file(model, "eval/test.csv", max_bytes=100) == b"a,y\n1,2\n"
    with pytest.raises(errors.NotFound, match="has no artifact eval/absent.csv"):
        models.read_file(model, "eval/absent.csv", max_bytes=100)
    with pytest.raises(errors.PermanentError, match="more than 3 bytes"):
        models.read_file(model, "eval/test.csv", max_bytes=3)
    with pytest.raises(errors.NotFound):
        models.read_file(model, "../../etc/passwd", max_bytes=100)
