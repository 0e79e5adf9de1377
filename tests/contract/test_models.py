"""The Models port's contract, run against every adapter of it: the in-memory fake and BlobModels on a fresh
container of the real Azurite. The tests at the end check what only the blob layout can show: which versions
are complete, which names are skipped, the sha256 cached in the blob's metadata, streaming downloads."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.storage.blob import ContainerClient

from shared import errors
from shared.adapters.blob_models import BlobModels

HAS_MEMORY = importlib.util.find_spec("shared.adapters.memory") is not None
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REQUEST = b'{"data": [[0.1, 0.2]]}'
RESPONSE = b'{"result": [1.5]}'


def a_version(model: bytes = b"model bytes", model_file: str = "model.joblib") -> dict[str, bytes]:
    return {model_file: model, "sample-request.json": REQUEST, "sample-response.json": RESPONSE}


class BlobHarness:
    def __init__(self, container: ContainerClient) -> None:
        self.container = container
        self.models = BlobModels(container=container)
        self._uploaded: dict[str, datetime] = {}

    def put(self, name: str, version: str, files: dict[str, bytes], *, model_file: str = "model.joblib") -> None:
        if not self.container.exists():
            self.container.create_container()
        for filename, data in files.items():
            blob_name = f"{name}/{version}/{filename}"
            answer = self.container.get_blob_client(blob_name).upload_blob(data, overwrite=True)
            self._uploaded[blob_name] = answer["last_modified"]

    def uploaded(self, blob_name: str) -> datetime:
        """The content's Last-Modified, as the upload answered it (the sha256's metadata write moves it)."""
        return self._uploaded[blob_name]


class MemoryHarness:
    def __init__(self) -> None:
        from shared.adapters import memory

        self.models = memory.MemoryModels()
        self._uploaded: dict[str, datetime] = {}

    def put(self, name: str, version: str, files: dict[str, bytes], *, model_file: str = "model.joblib") -> None:
        self._uploaded[f"{name}/{version}/{model_file}"] = T0
        self.models.put(name, version, files, uploaded=T0, model_file=model_file)

    def uploaded(self, blob_name: str) -> datetime:
        return self._uploaded[blob_name]


@pytest.fixture(params=[
    pytest.param("memory", marks=pytest.mark.skipif(not HAS_MEMORY, reason="shared/adapters/memory.py not yet")),
    pytest.param("blob", marks=pytest.mark.integration),
])
def harness(request: pytest.FixtureRequest):
    if request.param == "memory":
        return MemoryHarness()
    return BlobHarness(request.getfixturevalue("blob_container"))


@pytest.fixture
def blob(blob_container: ContainerClient) -> BlobHarness:
    return BlobHarness(blob_container)


def test_no_models_list_as_empty_and_get_raises_not_found(harness) -> None:
    assert harness.models.list_models() == []
    with pytest.raises(errors.NotFound):
        harness.models.get_model("diabetes", "1")


def test_a_complete_version_is_listed_and_got_with_its_model_files_sha256(harness) -> None:
    harness.put("diabetes", "1", a_version(b"one"))
    harness.put("diabetes", "2", a_version(b"two", "model.onnx"), model_file="model.onnx")
    got = harness.models.get_model("diabetes", "2")
    assert (got.name, got.version, got.blob_name) == ("diabetes", "2", "diabetes/2/model.onnx")
    assert got.sha256 == hashlib.sha256(b"two").hexdigest()
    assert got.uploaded == harness.uploaded("diabetes/2/model.onnx")
    listed = sorted(harness.models.list_models(), key=lambda m: m.version)
    assert [(m.version, m.sha256) for m in listed] == [("1", hashlib.sha256(b"one").hexdigest()),
                                                         ("2", got.sha256)]
    assert listed[1] == got
    with pytest.raises(errors.NotFound):
        harness.models.get_model("diabetes", "3")


def test_listing_by_name_gives_only_those_models(harness) -> None:
    harness.put("diabetes", "1", a_version(b"one"))
    harness.put("diabetes-lite", "1", a_version(b"lite"))  # its name starts like the other: not listed with it
    harness.put("churn", "7", a_version(b"churn"))
    assert sorted((m.name, m.version) for m in harness.models.list_models(("diabetes",))) == [("diabetes", "1")]
    assert sorted(m.name for m in harness.models.list_models(("churn", "diabetes"))) == ["churn", "diabetes"]
    assert harness.models.list_models(("nothing",)) == []
    assert len(harness.models.list_models()) == 3


def test_download_writes_every_file_of_the_version(harness, tmp_path: Path) -> None:
    harness.put("diabetes", "1", a_version(b"the model"))
    harness.put("diabetes", "2", a_version(b"another model"))
    harness.models.download(harness.models.get_model("diabetes", "1"), tmp_path / "out")
    written = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert written == a_version(b"the model")


# -- what only the blob layout shows --------------------------------------------------------------------------
@pytest.mark.integration
def test_only_versions_with_exactly_one_non_empty_model_file_are_complete(blob: BlobHarness) -> None:
    blob.put("m", "complete", a_version(b"x", "model.PKL"))
    blob.put("m", "sidecars-only", {"sample-request.json": REQUEST, "sample-response.json": RESPONSE})
    blob.put("m", "two-models", {"model.joblib": b"a", "model.onnx": b"b", "sample-request.json": REQUEST})
    blob.put("m", "empty-model", a_version(b""))
    blob.put("m", "not-a-model-suffix", {"model.pt": b"weights", "sample-request.json": REQUEST})
    blob.put("m", "bare", {"model.joblib": b"no sidecars"})  # they travel along when there, not required
    assert sorted(m.version for m in blob.models.list_models()) == ["bare", "complete"]
    for version in ("sidecars-only", "two-models", "empty-model", "not-a-model-suffix"):
        with pytest.raises(errors.NotFound):
            blob.models.get_model("m", version)


@pytest.mark.integration
def test_blobs_with_odd_names_are_skipped_and_refused(blob: BlobHarness) -> None:
    blob.put("good", "1", a_version())
    for odd in ("with space/1/model.joblib", "m/v..1/model.joblib", "m/1/deeper/model.joblib",
                "-dash/1/model.joblib", "toplevel.joblib", "m/1", "ünï/1/model.joblib", "m/%2e%2e/model.joblib"):
        blob.container.upload_blob(odd, b"x")
    assert [(m.name, m.version) for m in blob.models.list_models()] == [("good", "1")]
    for name, version in (("..", "1"), ("m", "../good/1"), ("with space", "1"), ("m/1", "x"), ("", "1")):
        with pytest.raises(errors.InvalidEvent):
            blob.models.get_model(name, version)


@pytest.mark.integration
def test_the_sha256_is_cached_in_the_blobs_metadata_and_read_from_there(blob: BlobHarness) -> None:
    blob.put("m", "1", a_version(b"weights"))
    first = blob.models.get_model("m", "1")
    metadata = blob.container.get_blob_client("m/1/model.joblib").get_blob_properties().metadata
    assert metadata["sha256"] == hashlib.sha256(b"weights").hexdigest() == first.sha256
    # Proof that later reads take the cache rather than hashing again: a planted value comes back.
    planted = "0" * 64
    blob.container.get_blob_client("m/1/model.joblib").set_blob_metadata({**metadata, "sha256": planted})
    again = blob.models.list_models()[0]
    assert again.sha256 == planted
    assert again.uploaded == first.uploaded  # the content's time, not the metadata write's


@pytest.mark.integration
def test_an_overwritten_model_file_gets_a_new_sha256(blob: BlobHarness) -> None:
    blob.put("m", "1", a_version(b"first"))
    assert blob.models.get_model("m", "1").sha256 == hashlib.sha256(b"first").hexdigest()
    blob.put("m", "1", a_version(b"second"))  # an upload replaces the metadata with the bytes
    assert blob.models.get_model("m", "1").sha256 == hashlib.sha256(b"second").hexdigest()


@pytest.mark.integration
def test_a_model_file_overwritten_while_being_hashed_is_labelled_with_its_new_bytes(blob: BlobHarness) -> None:
    blob.put("m", "1", a_version(b"old"))
    listed = next(iter(blob.container.list_blobs(name_starts_with="m/1/model", include=["metadata"])))
    blob.put("m", "1", a_version(b"new"))
    # What list_models does with a listing that is stale by the time it hashes (If-Match fails, it re-reads).
    model = blob.models._describe("m", "1", listed)
    assert model.sha256 == hashlib.sha256(b"new").hexdigest()
    metadata = blob.container.get_blob_client("m/1/model.joblib").get_blob_properties().metadata
    assert metadata["sha256"] == model.sha256


@pytest.mark.integration
def test_a_large_model_downloads_in_chunks_not_whole_in_memory(blob: BlobHarness, tmp_path: Path) -> None:
    # The HTTP stack holds some 40 MiB around each 4 MiB chunk whatever the file's size: 128 MiB shows the
    # difference between streaming and holding the file.
    large = os.urandom(128 * 1024 * 1024)
    sha256 = hashlib.sha256(large).hexdigest()
    blob.put("m", "1", a_version(large, "model.onnx"))
    del large
    model = blob.models.get_model("m", "1")
    assert model.sha256 == sha256
    tracemalloc.start()
    try:
        blob.models.download(model, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with (tmp_path / "model.onnx").open("rb") as written:
        assert hashlib.file_digest(written, "sha256").hexdigest() == sha256
    assert peak < 64 * 1024 * 1024, f"peak {peak} bytes for a 128 MiB model"


@pytest.mark.integration
def test_download_refuses_a_model_file_that_changed_since_it_was_listed(blob: BlobHarness, tmp_path: Path) -> None:
    blob.put("m", "1", a_version(b"planned"))
    model = blob.models.get_model("m", "1")
    blob.put("m", "1", a_version(b"replaced"))
    with pytest.raises(errors.PermanentError):
        blob.models.download(model, tmp_path)


def test_the_cloud_constructor_takes_an_account_url_and_a_token_credential() -> None:
    class FakeCredential:
        def get_token(self, *scopes: str, **kwargs) -> AccessToken:
            return AccessToken("token", int(time.time()) + 3600)

    models = BlobModels.from_account_url("https://acct.blob.core.windows.net", FakeCredential(), "models")
    assert models._container.url == "https://acct.blob.core.windows.net/models"
    assert isinstance(models._container.credential, FakeCredential)


def test_read_file_answers_a_file_that_travels_with_the_version_and_refuses_others(harness):
    harness.put("diabetes", "1", {**a_version(), "eval.csv": b"a,y\n1,2\n"})
    model = harness.models.get_model("diabetes", "1")

    assert harness.models.read_file(model, "eval.csv", max_bytes=100) == b"a,y\n1,2\n"
    for path in ("absent.csv", "../2/eval.csv"):
        with pytest.raises(errors.NotFound):
            harness.models.read_file(model, path, max_bytes=100)
    with pytest.raises(errors.PermanentError, match="more than 3"):
        harness.models.read_file(model, "eval.csv", max_bytes=3)
