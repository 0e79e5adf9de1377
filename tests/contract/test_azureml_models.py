"""MlflowModels on an Azure ML workspace: versions whose artifacts are at azureml:// URIs (a run's, or a folder
uploaded from local files) are listed, hashed, downloaded and read through the run-history and artifact
services, their bytes from real Azurite blobs through SAS URLs (tests/fakes/azureml_workspace.py stands in for
the workspace's endpoints, which cannot run here)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared import errors, modelfiles
from shared.adapters.mlflow_models import SHA_TAG, MlflowModels
from tests.fakes import azureml_workspace, selfsigned

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "mlflow" / "sklearn-skops"
TOKEN = "entra-token-for-management"  # noqa: S105 - the fake's expected bearer token


def folder_files(folder: Path = FIXTURE) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def workspace(azurite: str, tmp_path: Path) -> Iterator[azureml_workspace.Workspace]:
    cert, key = selfsigned.make_certificate(tmp_path)
    ws = azureml_workspace.Workspace(token=TOKEN, page=2)  # small pages: every listing takes several
    with selfsigned.https_server(azureml_workspace.Handler, cert, key, ws=ws) as server:
        ws.host = f"127.0.0.1:{server.server_address[1]}"
        ws.cert = cert
        yield ws


def adapter(ws: azureml_workspace.Workspace, *, token: str = TOKEN, **options) -> MlflowModels:
    client = httpx.Client(timeout=30, verify=ssl.create_default_context(cafile=str(ws.cert)))
    return MlflowModels(uri=ws.tracking_uri, client=client, token=lambda: token, sleep=lambda s: None, **options)


def test_a_version_logged_by_a_run_lists_with_the_folder_digest_and_downloads_byte_for_byte(workspace, tmp_path):
    run = workspace.log_run(folder_files())
    workspace.add_run_file(run, "outputs/other.txt", b"not the model")  # the run container holds more than it
    version = workspace.register("diabetes", f"{workspace.run_artifacts(run)}/model", run_id=run)
    models = adapter(workspace)

    (model,) = models.list_models()
    models.download(model, tmp_path / "model")

    assert (model.name, model.version) == ("diabetes", version)
    assert model.sha256 == modelfiles.fingerprint(FIXTURE) == modelfiles.fingerprint(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(folder_files())
    assert workspace.versions[("diabetes", version)].tags[SHA_TAG] == model.sha256
    assert any("/history/v1.0/" in r and r.endswith("/artifacts/contentinfo") for r in workspace.requests)


def test_a_version_registered_from_local_files_reads_through_the_artifact_service(workspace, tmp_path):
    version = workspace.register("diabetes", workspace.upload_local(folder_files()))
    models = adapter(workspace)

    model = models.get_model("diabetes", version)
    models.download(model, tmp_path / "model")

    assert modelfiles.fingerprint(tmp_path / "model") == model.sha256 == modelfiles.fingerprint(FIXTURE)
    assert any("/artifact/v2.0/" in r and "/artifacts/LocalUpload/" in r for r in workspace.requests)


def test_read_file_answers_an_artifact_of_the_run_that_logged_the_version(workspace):
    run = workspace.log_run(folder_files())
    workspace.add_run_file(run, "eval/test.csv", b"a,y\n1,2\n")
    workspace.register("diabetes", f"{workspace.run_artifacts(run)}/model", run_id=run)
    models = adapter(workspace)
    (model,) = models.list_models(("diabetes",))

    assert models.read_file(model, "eval/test.csv", max_bytes=100) == b"a,y\n1,2\n"
    with pytest.raises(errors.NotFound, match="has no artifact eval/absent.csv"):
        models.read_file(model, "eval/absent.csv", max_bytes=100)
    with pytest.raises(errors.PermanentError, match="more than 3 bytes"):
        models.read_file(model, "eval/test.csv", max_bytes=3)


def test_artifacts_larger_than_the_limit_are_refused_while_they_stream_as_azure_lists_no_sizes(workspace, caplog):
    run = workspace.log_run(folder_files())
    version = workspace.register("diabetes", f"{workspace.run_artifacts(run)}/model", run_id=run)

    with caplog.at_level(logging.WARNING, logger="shared.adapters.mlflow_models"):
        assert adapter(workspace, max_bytes=1000).list_models(("diabetes",)) == []

    assert f"diabetes/{version}'s artifacts take more than the 1,000 bytes a release may carry" in caplog.text
    assert SHA_TAG not in workspace.versions[("diabetes", version)].tags


def test_a_transient_failure_of_the_artifact_services_is_retried(workspace, tmp_path):
    run = workspace.log_run(folder_files())
    version = workspace.register("diabetes", f"{workspace.run_artifacts(run)}/model", run_id=run)
    workspace.fail(503, 503, where="/artifacts")  # the listing's first page, twice
    workspace.fail(503, where="/contentinfo")  # then one file's content location
    models = adapter(workspace)

    model = models.get_model("diabetes", version)

    assert model.sha256 == modelfiles.fingerprint(FIXTURE)
    assert workspace.failures == []


def test_a_sas_url_that_expired_on_the_way_is_asked_for_again(workspace, tmp_path):
    run = workspace.log_run(folder_files())
    version = workspace.register("diabetes", f"{workspace.run_artifacts(run)}/model", run_id=run)
    models = adapter(workspace)
    model = models.get_model("diabetes", version)
    workspace.expired = 1
    asked = sum(r.endswith("/contentinfo") for r in workspace.requests)

    models.download(model, tmp_path / "model")

    assert modelfiles.fingerprint(tmp_path / "model") == model.sha256
    assert sum(r.endswith("/contentinfo") for r in workspace.requests) - asked == len(folder_files()) + 1


@pytest.mark.parametrize("source, says", [
    ("azureml://eastus.api.azureml.ms/mlflow/v2.0/registries/shared/models/m/versions/1/storage/s/paths/p/x",
     "of a form this adapter does not read"),
    ("azureml://subscriptions/s/resourcegroups/rg/workspaces/w/datastores/workspaceblobstore/paths/m",
     "of a form this adapter does not read"),
    ("azureml://h/mlflow/v2.0/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/"
     "workspaces/another/experiments/e/runs/r/artifacts/model", "in another Azure ML workspace"),
    ("wasbs://models@acct.blob.core.windows.net/m", "at a wasbs: URI"),
], ids=["registry", "datastore", "other-workspace", "wasbs"])
def test_a_version_at_an_artifact_uri_it_cannot_read_is_skipped_with_the_form_named(workspace, caplog, source,
                                                                                    says):
    workspace.register("diabetes", source)

    with caplog.at_level(logging.WARNING, logger="shared.adapters.mlflow_models"):
        assert adapter(workspace).list_models(("diabetes",)) == []
    assert says in caplog.text
    assert "acct" not in caplog.text and "shared/models" not in caplog.text


def test_a_wrong_token_is_a_permanent_error_and_never_reaches_storage(workspace):
    run = workspace.log_run(folder_files())
    version = workspace.register("diabetes", f"{workspace.run_artifacts(run)}/model", run_id=run)

    with pytest.raises(errors.PermanentError, match="answered 401 AuthenticationFailed") as raised:
        adapter(workspace, token="forged").get_model("diabetes", version)
    assert "forged" not in str(raised.value)


def test_a_relative_next_link_is_followed_on_the_workspaces_host(workspace, tmp_path):
    workspace.next_links = "relative"
    run = workspace.log_run(folder_files())
    version = workspace.register("diabetes", f"{workspace.run_artifacts(run)}/model", run_id=run)

    model = adapter(workspace).get_model("diabetes", version)

    assert model.sha256 == modelfiles.fingerprint(FIXTURE)
    assert sum(r.endswith(f"/runs/{run}/artifacts") for r in workspace.requests) > 2  # several pages


def test_a_next_link_to_another_host_is_refused_and_gets_no_token(workspace, caplog):
    workspace.next_links = "127.0.0.1:9"  # nothing listens there: a request would fail otherwise
    run = workspace.log_run(folder_files())
    workspace.register("diabetes", f"{workspace.run_artifacts(run)}/model", run_id=run)

    with caplog.at_level(logging.WARNING, logger="shared.adapters.mlflow_models"):
        assert adapter(workspace).list_models(("diabetes",)) == []
    assert "sent its next page to another host" in caplog.text


def test_storage_that_refuses_a_fresh_sas_too_skips_the_version_for_good(workspace, caplog):
    workspace.denied = True
    run = workspace.log_run(folder_files())
    version = workspace.register("diabetes", f"{workspace.run_artifacts(run)}/model", run_id=run)

    with caplog.at_level(logging.WARNING, logger="shared.adapters.mlflow_models"):
        assert adapter(workspace).list_models(("diabetes",)) == []

    assert f"diabetes/{version} is skipped" in caplog.text and "storage answered 403" in caplog.text
    assert "sig=" not in caplog.text
    assert sum(r.endswith("/contentinfo") for r in workspace.requests) == 2  # a fresh SAS once, then no more


@pytest.mark.parametrize("source", [
    "azureml://artifacts/../../history/v1.0/x",
    "azureml://artifacts/LocalUpload/../model",
    "azureml://subscriptions/s/resourcegroups/rg/workspaces/w/datastores/d/paths/experiments/x/runs/y/artifacts/m",
], ids=["climbs-origin", "climbs-container", "datastore-with-runs-in-path"])
def test_an_artifact_uri_that_would_move_the_call_elsewhere_is_refused(workspace, caplog, source):
    workspace.register("diabetes", source)
    before = len(workspace.requests)

    with caplog.at_level(logging.WARNING, logger="shared.adapters.mlflow_models"):
        assert adapter(workspace).list_models(("diabetes",)) == []

    assert "of a form this adapter does not read" in caplog.text
    assert not [r for r in workspace.requests[before:] if "/history/" in r or "/artifact/" in r]
