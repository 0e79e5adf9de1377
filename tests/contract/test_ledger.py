"""The Ledger port's contract, run against every adapter of it: the in-memory fake and BlobLedger on a fresh
container of the real Azurite. The tests at the end check what only the blob layout can show (ETags, the
lease's renewal, error messages)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from shared import errors
from shared.adapters import blob_storage
from shared.adapters.blob_ledger import BlobLedger
from shared.releases import Deployment, Entry, Environment, Model, Release, Status

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HAS_MEMORY = importlib.util.find_spec("shared.adapters.memory") is not None


def a_release(release_id: str, *, created: datetime = T0, **changes) -> Release:
    fields = {"trigger": "manual", "repository": "127.0.0.1:5000/shipbot/app", "tag": release_id,
              "status": Status.BUILDING, **changes}
    return Release(id=release_id, created=created, **fields)


class BlobHarness:
    """BlobLedgers on one container; every instance is another process's view of the same ledger."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container
        self.slept: list[float] = []
        self.on_sleep = lambda: None  # runs on each of the ledger's waits: lease polls and CAS backoff
        self.ledger = self.other()

    def other(self, *, lease_wait_seconds: float = 1.0, backoff: bool = False) -> BlobLedger:
        """`backoff`: really wait between compare-and-swap attempts, as in production, where the jitter is
        what keeps two busy writers from colliding round after round."""
        return BlobLedger(container=self.container, sleep=self._backoff if backoff else self._sleep,
                          lease_seconds=15, lease_wait_seconds=lease_wait_seconds, lease_poll_seconds=0.25)

    def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.on_sleep()

    def _backoff(self, seconds: float) -> None:
        self.slept.append(seconds)
        time.sleep(seconds)

    def written(self) -> object:
        """Changes whenever any document is written."""
        return {b.name: b.etag for b in self.container.list_blobs()}

    @contextlib.contextmanager
    def waiting(self) -> Iterator[list[float]]:
        """Yields a list that holds, after the block, how long the ledger waited inside it."""
        before, waited = len(self.slept), []
        try:
            yield waited
        finally:
            waited.append(sum(self.slept[before:]))


class MemoryHarness:
    def __init__(self) -> None:
        from shared.adapters import memory

        self.ledger = memory.MemoryLedger(lease_wait_seconds=0.3)
        self.on_sleep = None  # the fake waits on a lock: nothing to hook

    def other(self, *, lease_wait_seconds: float = 0.3, backoff: bool = False):
        self.ledger.lease_wait_seconds = lease_wait_seconds
        return self.ledger  # the fake's state lives in its instance

    def written(self) -> object:
        return self.ledger.writes

    @contextlib.contextmanager
    def waiting(self) -> Iterator[list[float]]:
        start, waited = time.monotonic(), []
        try:
            yield waited
        finally:
            waited.append(time.monotonic() - start)


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


# -- releases -----------------------------------------------------------------------------------------------
def test_a_created_release_reads_back_equal(harness) -> None:
    model = Model(name="diabetes", version="3", sha256="ab" * 32, blob_name="diabetes/3/model.joblib",
                  uploaded=T0 - timedelta(hours=1))
    release = a_release("r-0123456789abcdef", commit="c" * 40, model=model, recipe="docker:1",
                        digest="sha256:" + "d" * 64, deployed=("staging",),
                        history=(Entry(at=T0, what="planned", by="test", detail="x"),))
    harness.ledger.create_release(release)
    assert harness.ledger.get_release(release.id) == release


def test_creating_a_release_twice_raises_exists(harness) -> None:
    harness.ledger.create_release(a_release("r-1"))
    with pytest.raises(errors.Exists):
        harness.ledger.create_release(a_release("r-1", trigger="git_push"))
    assert harness.ledger.get_release("r-1").trigger == "manual"


def test_a_missing_release_raises_not_found(harness) -> None:
    with pytest.raises(errors.NotFound):
        harness.ledger.get_release("r-missing")
    with pytest.raises(errors.NotFound):
        harness.ledger.update_release("r-missing", lambda r: r.with_(held=True))


def test_an_update_applies_the_change_and_returns_it(harness) -> None:
    harness.ledger.create_release(a_release("r-1"))
    updated = harness.ledger.update_release(
        "r-1", lambda r: r.with_(status=Status.GREEN, entry=Entry(T0, "green", "t")))
    assert updated.status is Status.GREEN and len(updated.history) == 1
    assert harness.ledger.get_release("r-1") == updated


def test_two_concurrent_writers_lose_no_update(harness) -> None:
    harness.ledger.create_release(a_release("r-1"))
    writers = [harness.other(backoff=True), harness.other(backoff=True)]

    def increment_50_times(ledger) -> None:
        for _ in range(50):
            ledger.update_release("r-1", lambda r: r.with_(build_attempts=r.build_attempts + 1))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(increment_50_times, writers))
    assert harness.ledger.get_release("r-1").build_attempts == 100


def test_a_change_that_returns_its_input_writes_nothing(harness) -> None:
    harness.ledger.create_release(a_release("r-1"))
    harness.ledger.update_environment("staging", lambda e: e.with_(entry=Entry(T0, "made", "t")))
    before = harness.written()
    assert harness.ledger.update_release("r-1", lambda r: r) == harness.ledger.get_release("r-1")
    harness.ledger.update_release("r-1", lambda r: r.with_(held=False))  # equal, though a new object
    harness.ledger.update_environment("staging", lambda e: e)
    harness.ledger.update_environment("production", lambda e: e)  # missing, and stays so
    assert harness.written() == before
    assert harness.ledger.get_environment("production") == Environment("production")


def test_a_change_that_raises_leaves_the_document_alone(harness) -> None:
    harness.ledger.create_release(a_release("r-1"))

    def refuse(release: Release) -> Release:
        raise errors.Refused("held")

    with pytest.raises(errors.Refused):
        harness.ledger.update_release("r-1", refuse)
    assert harness.ledger.get_release("r-1") == a_release("r-1")


def test_releases_list_newest_first_then_by_id(harness) -> None:
    assert harness.ledger.list_releases() == []
    made = [a_release("r-b", created=T0), a_release("r-c", created=T0 + timedelta(seconds=5)),
            a_release("r-a", created=T0), a_release("r-d", created=T0 - timedelta(days=1))]
    for release in made:
        harness.ledger.create_release(release)
    assert [r.id for r in harness.ledger.list_releases()] == ["r-c", "r-b", "r-a", "r-d"]


def test_a_few_hundred_releases_list_complete_and_in_order_and_show_updates(harness) -> None:
    made = [a_release(f"r-{i:04d}", created=T0 + timedelta(minutes=i % 97)) for i in range(300)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(harness.ledger.create_release, made))
    listed = harness.ledger.list_releases()
    assert listed == sorted(made, key=lambda r: (r.created, r.id), reverse=True)
    harness.ledger.update_release("r-0042", lambda r: r.with_(held=True))
    assert [r.id for r in harness.ledger.list_releases() if r.held] == ["r-0042"]


# -- environments -------------------------------------------------------------------------------------------
def test_a_missing_environment_reads_as_an_empty_one(harness) -> None:
    assert harness.ledger.get_environment("staging") == Environment("staging")


def test_updating_a_missing_environment_creates_it(harness) -> None:
    deployment = Deployment(release_id="r-1", ref="127.0.0.1:5000/shipbot/app@sha256:" + "e" * 64, at=T0, by="t")
    made = harness.ledger.update_environment("staging", lambda e: e.with_(current=deployment))
    assert harness.ledger.get_environment("staging") == made == Environment("staging", current=deployment)
    assert harness.ledger.get_environment("production") == Environment("production")


def test_concurrent_first_updates_of_an_environment_all_land(harness) -> None:
    writers = [harness.other(backoff=True), harness.other(backoff=True)]

    def add_20_entries(ledger) -> None:
        for i in range(20):
            ledger.update_environment("staging", lambda e, i=i: e.with_(entry=Entry(T0, f"step {i}", "t")))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(add_20_entries, writers))
    assert len(harness.ledger.get_environment("staging").history) == 40


# -- leases -------------------------------------------------------------------------------------------------
def test_a_second_holder_waits_and_then_gets_lease_busy(harness) -> None:
    second = harness.other(lease_wait_seconds=0.3)
    with harness.ledger.lease_environment("staging"), harness.waiting() as waited, \
            pytest.raises(errors.LeaseBusy), second.lease_environment("staging"):
        pytest.fail("two holders of one lease")
    assert waited[0] >= 0.25


def test_a_waiting_holder_gets_the_lease_once_the_first_lets_go(harness) -> None:
    second = harness.other(lease_wait_seconds=30)
    waiting, released, got = threading.Event(), threading.Event(), threading.Event()
    if harness.on_sleep is not None:  # the blob ledger polls: hold its first wait until the lease is let go
        harness.on_sleep = lambda: (waiting.set(), released.wait(30))
    else:
        waiting.set()  # the fake blocks on its lock; nothing to observe

    def take() -> None:
        with second.lease_environment("staging"):
            got.set()

    with harness.ledger.lease_environment("staging"):
        taker = threading.Thread(target=take)
        taker.start()
        assert waiting.wait(30)
        assert not got.is_set()
    released.set()
    taker.join(30)
    assert got.is_set()


def test_a_lease_is_let_go_when_its_block_raises(harness) -> None:
    with pytest.raises(RuntimeError), harness.ledger.lease_environment("staging"):
        raise RuntimeError("rollout failed")
    with harness.waiting() as waited, harness.other().lease_environment("staging"):
        pass
    assert waited[0] < 0.25  # free at once, not after a wait


def test_leases_on_two_environments_are_independent(harness) -> None:
    with harness.ledger.lease_environment("staging"), harness.other().lease_environment("production"), \
            pytest.raises(errors.LeaseBusy), harness.other(lease_wait_seconds=0).lease_environment("staging"):
        pass


def test_a_lease_asked_for_without_waiting_is_busy_at_once(harness) -> None:
    with harness.ledger.lease_environment("staging"), harness.waiting() as waited, \
            pytest.raises(errors.LeaseBusy), harness.other(lease_wait_seconds=30).lease_environment("staging",
                                                                                               wait=False):
        pass
    assert waited[0] < 0.25


def test_a_release_lease_is_one_holders_and_apart_from_the_environments(harness) -> None:
    with harness.ledger.lease_release("r-1"), harness.other().lease_environment("r-1"), \
            harness.other().lease_release("r-2"), pytest.raises(errors.LeaseBusy), \
            harness.other().lease_release("r-1", wait=False):
        pass
    with harness.other().lease_release("r-1", wait=False):  # let go: free again
        pass


# -- event markers ------------------------------------------------------------------------------------------
def test_an_event_marker_is_created_once_and_deleted_idempotently(harness) -> None:
    event_id = "0f6f1b8e-7d2b-4e55-9a6c-5b0c8a1d2e3f"
    harness.ledger.create_event_marker(event_id)
    with pytest.raises(errors.Exists):
        harness.ledger.create_event_marker(event_id)
    harness.ledger.delete_event_marker(event_id)
    harness.ledger.delete_event_marker(event_id)
    harness.ledger.create_event_marker(event_id)


def test_event_ids_of_any_shape_are_markers_of_their_own(harness) -> None:
    odd = ["a/b", "../x", "with space", "é", "", "x" * 500]
    for event_id in odd:
        harness.ledger.create_event_marker(event_id)
    for event_id in odd:
        with pytest.raises(errors.Exists):
            harness.ledger.create_event_marker(event_id)
    harness.ledger.create_event_marker("a_b")


# -- what only the blob layout shows --------------------------------------------------------------------------
@pytest.mark.integration
def test_blob_documents_are_the_json_of_to_json_under_the_documented_names(blob: BlobHarness) -> None:
    blob.ledger.create_release(a_release("r-1"))
    blob.ledger.update_environment("staging", lambda e: e.with_(entry=Entry(T0, "made", "t")))
    blob.ledger.create_event_marker("e-1")
    with blob.ledger.lease_environment("staging"):
        pass
    names = sorted(b.name for b in blob.container.list_blobs())
    by_time = f"index/by-time/{10**17 - 1 - int(T0.timestamp() * 10**6):017d}-r-1"  # newest first when listed
    assert names == ["environments/staging.json", "events/e-1", by_time, "index/in-flight/r-1", "index/v1",
                     "leases/staging", "releases/r-1.json"]
    doc = json.loads(blob.container.download_blob("releases/r-1.json").readall())
    assert doc == a_release("r-1").to_json()
    assert blob.container.get_blob_client("releases/r-1.json").get_blob_properties().content_settings.content_type \
        == "application/json"


@pytest.mark.integration
def test_a_document_that_keeps_changing_ends_in_ledger_conflict(blob: BlobHarness) -> None:
    blob.ledger.create_release(a_release("r-1"))
    meddler = blob.other()

    def change_meanwhile(release: Release) -> Release:
        meddler.update_release("r-1", lambda r: r.with_(build_attempts=r.build_attempts + 1))
        return release.with_(held=True)

    with pytest.raises(errors.LedgerConflict):
        blob.ledger.update_release("r-1", change_meanwhile)
    assert len(blob.slept) == 9  # ten attempts, a backoff between each two
    assert blob.ledger.get_release("r-1").build_attempts == 10
    assert not blob.ledger.get_release("r-1").held


@pytest.mark.integration
def test_a_held_lease_outlives_its_duration_because_it_is_renewed(blob: BlobHarness) -> None:
    # A lease lasts 15 s (Azure's shortest); another instance polls it, for real, for 17 s.
    other = BlobLedger(container=blob.container, lease_seconds=15, lease_wait_seconds=17, lease_poll_seconds=1)
    with blob.ledger.lease_environment("staging"):
        start = time.monotonic()
        with pytest.raises(errors.LeaseBusy), other.lease_environment("staging"):
            pytest.fail("the lease expired while held")
        assert time.monotonic() - start > 15


@pytest.mark.integration
def test_odd_release_ids_and_environment_names_never_become_blob_paths(blob: BlobHarness) -> None:
    with pytest.raises(errors.InvalidEvent):
        blob.ledger.create_release(a_release("../r-1"))
    with pytest.raises(errors.NotFound):
        blob.ledger.get_release("r-1/../../x")
    with pytest.raises(errors.NotFound):
        blob.ledger.get_environment("../staging")
    assert not blob.container.exists() or list(blob.container.list_blobs()) == []


@pytest.mark.integration
def test_storage_errors_are_transient_and_name_no_secret(azurite: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    sas = f"BlobEndpoint=http://127.0.0.1:{port}/acct;SharedAccessSignature=sv=2024-01-01&sig=TOPSECRETSIG"
    unreachable = BlobLedger(container=blob_storage.container_from_connection_string(sas, "ledger", retry_total=0))
    wrong_key = BlobLedger.from_connection_string(azurite.replace("Eby8", "AAAA"), "ledger")
    for ledger, secret in ((unreachable, "TOPSECRETSIG"), (wrong_key, "AAAAvdM02x")):
        with pytest.raises(errors.TransientError) as caught:
            ledger.get_release("r-1")
        chain, e = [], caught.value
        while e is not None:
            chain.append(str(e))
            e = e.__cause__ or e.__context__
        assert chain[0].startswith(("creating the ledger container: ", "reading releases/r-1.json: ")), chain[0]
        assert not any(secret in text for text in chain), chain



class FakeCredential:
    """A TokenCredential; nothing here asks it for a token."""

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        return AccessToken("token", int(time.time()) + 3600)


def test_the_cloud_constructor_takes_an_account_url_and_a_token_credential() -> None:
    ledger = BlobLedger.from_account_url("https://acct.blob.core.windows.net", FakeCredential(), "ledger",
                                         lease_seconds=30)
    assert ledger._container.url == "https://acct.blob.core.windows.net/ledger"
    assert isinstance(ledger._container.credential, FakeCredential)


# -- the fleet ----------------------------------------------------------------------------------------------------
def test_fleet_versions_are_kept_in_order_and_each_stays_readable(harness) -> None:
    with pytest.raises(errors.NotFound, match="no fleet file was applied"):
        harness.ledger.get_fleet()
    assert harness.ledger.list_fleet() == []

    first = harness.ledger.put_fleet("apps: [1]\n", by="alice", at=T0, reason="the first")
    second = harness.ledger.put_fleet("apps: [2]\n", by="bob ✓", at=T0 + timedelta(minutes=1))

    assert (first.version, second.version) == (1, 2)
    assert harness.ledger.get_fleet() == second and harness.ledger.get_fleet(1) == first
    assert [v.version for v in harness.ledger.list_fleet()] == [2, 1]
    assert harness.ledger.get_fleet(1).reason == "the first" and harness.ledger.get_fleet(2).applied_by == "bob ✓"
    with pytest.raises(errors.NotFound, match="no fleet version 3"):
        harness.ledger.get_fleet(3)


def test_fleet_files_applied_at_once_get_a_version_each(harness) -> None:
    with ThreadPoolExecutor(4) as pool:
        applied = list(pool.map(lambda n: harness.other().put_fleet(f"apps: [{n}]\n", by=f"op{n}", at=T0),
                                range(4)))

    assert sorted(v.version for v in applied) == [1, 2, 3, 4]
    assert {v.text for v in harness.ledger.list_fleet()} == {f"apps: [{n}]\n" for n in range(4)}


# -- the bounded reads ----------------------------------------------------------------------------------------------
def test_in_flight_follows_each_release_status(harness) -> None:
    for n, status in enumerate((Status.BUILDING, Status.BUILT, Status.GREEN, Status.FAILED)):
        harness.ledger.create_release(a_release(f"r-{n}", created=T0 + timedelta(minutes=n), status=status))

    assert [r.id for r in harness.ledger.list_in_flight()] == ["r-1", "r-0"]
    harness.ledger.update_release("r-0", lambda r: r.with_(status=Status.TESTING))
    harness.ledger.update_release("r-1", lambda r: r.with_(status=Status.GREEN))
    harness.ledger.update_release("r-3", lambda r: r.with_(status=Status.BUILDING))
    assert [r.id for r in harness.ledger.list_in_flight()] == ["r-3", "r-0"]


def test_releases_since_a_moment_are_the_newer_ones_newest_first(harness) -> None:
    for n in range(7):
        harness.ledger.create_release(a_release(f"r-{n}", created=T0 + timedelta(minutes=n)))

    assert [r.id for r in harness.ledger.releases_since(T0 + timedelta(minutes=4))] == ["r-6", "r-5", "r-4"]
    assert [r.id for r in harness.ledger.releases_since(None, limit=2)] == ["r-6", "r-5"]
    assert len(harness.ledger.releases_since()) == 7 == len(harness.ledger.list_releases())


def test_a_release_is_found_by_its_image_digest(harness) -> None:
    digest = "sha256:" + "d" * 64
    harness.ledger.create_release(a_release("r-1"))
    with pytest.raises(errors.NotFound):
        harness.ledger.find_release_by_digest(digest)
    harness.ledger.update_release("r-1", lambda r: r.with_(status=Status.BUILT, digest=digest))
    assert harness.ledger.find_release_by_digest(digest).id == "r-1"
    harness.ledger.create_release(a_release("i-2", digest="sha256:" + "e" * 64, status=Status.BUILT))
    assert harness.ledger.find_release_by_digest("sha256:" + "e" * 64).id == "i-2"


def test_a_ledger_written_before_the_index_is_indexed_once_and_reads_the_same(blob) -> None:
    blob.container.create_container()
    for n in range(5):  # as the code before the index wrote them: documents only
        release = a_release(f"r-{n}", created=T0 + timedelta(minutes=n),
                            status=Status.BUILDING if n == 4 else Status.GREEN, digest="sha256:" + f"{n}" * 64)
        blob.container.upload_blob(f"releases/{release.id}.json", json.dumps(release.to_json()))

    fresh = blob.other()
    assert [r.id for r in fresh.list_in_flight()] == ["r-4"]
    assert [r.id for r in fresh.releases_since(T0 + timedelta(minutes=3))] == ["r-4", "r-3"]
    assert fresh.find_release_by_digest("sha256:" + "2" * 64).id == "r-2"
    assert blob.container.get_blob_client("index/v1").exists()


def test_a_stale_in_flight_marker_heals_and_a_marker_without_its_document_is_skipped(blob) -> None:
    blob.ledger.create_release(a_release("r-1", status=Status.GREEN))
    blob.container.upload_blob("index/in-flight/r-1", b"")              # its writer died before removing it
    blob.container.upload_blob("index/in-flight/r-gone", b"")           # died before writing the document
    blob.container.upload_blob("index/by-time/00000000000000000-r-gone", b"")

    assert blob.ledger.list_in_flight() == []
    assert not blob.container.get_blob_client("index/in-flight/r-1").exists()
    assert [r.id for r in blob.ledger.releases_since()] == ["r-1"]


def test_a_duplicate_create_leaves_one_release_in_every_read(harness) -> None:
    harness.ledger.create_release(a_release("r-1", status=Status.GREEN))
    with pytest.raises(errors.Exists):
        harness.ledger.create_release(a_release("r-1", created=T0 + timedelta(hours=1)))

    assert [r.id for r in harness.ledger.releases_since()] == ["r-1"]
    assert harness.ledger.releases_since(T0 + timedelta(minutes=30)) == []
    assert harness.ledger.list_in_flight() == []


@pytest.mark.integration
def test_each_application_has_a_ledger_of_its_own_in_one_container(blob_container) -> None:
    root = BlobLedger(container=blob_container, lease_seconds=15)  # a single-application ShipBot's layout
    churn = BlobLedger(container=blob_container, lease_seconds=15, app="churn")
    fraud = BlobLedger(container=blob_container, lease_seconds=15, app="fraud")
    digest = "sha256:" + "d" * 64
    for ledger, status in ((root, Status.GREEN), (churn, Status.BUILDING), (fraud, Status.BUILT)):
        ledger.create_release(a_release("r-1", status=status, digest=digest))
        ledger.update_environment("staging", lambda e, s=status: e.with_(entry=Entry(T0, s.value, "t")))
        ledger.create_event_marker("e-1")  # each application sees an event once

    assert [ledger.get_release("r-1").status for ledger in (root, churn, fraud)] == [
        Status.GREEN, Status.BUILDING, Status.BUILT]
    assert [len(ledger.list_releases()) for ledger in (root, churn, fraud)] == [1, 1, 1]
    assert [r.status for r in churn.list_in_flight()] == [Status.BUILDING] and root.list_in_flight() == []
    assert fraud.find_release_by_digest(digest).status is Status.BUILT
    assert churn.get_environment("staging").history[-1].what == "building"
    with churn.lease_environment("staging"), fraud.lease_environment("staging", wait=False):
        pass  # one application's rollout never waits for another's
    names = {b.name for b in blob_container.list_blobs()}
    assert {"releases/r-1.json", "apps/churn/releases/r-1.json", "apps/fraud/releases/r-1.json"} <= names
    churn.put_fleet("apps: []\n", by="t", at=T0)
    assert fraud.get_fleet().version == 1  # the fleet is the bot's, not an application's
    with pytest.raises(ValueError, match="is not"):
        BlobLedger(container=blob_container, app="Bad/Name")


def test_an_environments_history_stays_bounded_and_every_entry_stays_readable(harness) -> None:
    from shared.releases import HISTORY_LIMIT

    for n in range(HISTORY_LIMIT + 60):
        harness.ledger.update_environment("staging", lambda e, n=n: e.with_(
            entry=Entry(T0 + timedelta(minutes=n), "deployed", "t", f"r-{n}")))

    kept = harness.ledger.get_environment("staging").history
    assert len(kept) <= HISTORY_LIMIT and kept[-1].detail == f"r-{HISTORY_LIMIT + 59}"
    every = harness.ledger.environment_history("staging")
    assert [e.detail for e in every] == [f"r-{n}" for n in range(HISTORY_LIMIT + 60)]
    assert harness.ledger.environment_history("production") == []


@pytest.mark.integration
def test_a_release_back_in_flight_is_never_hidden_by_a_marker_removed_in_a_race(blob) -> None:
    blob.ledger.create_release(a_release("r-1", status=Status.FAILED))
    blob.ledger.update_release("r-1", lambda r: r.with_(status=Status.BUILDING))  # a retried build
    assert [r.id for r in blob.ledger.list_in_flight()] == ["r-1"]

    blob.container.delete_blob("index/in-flight/r-1")  # the stale delete of a settling writer that lost a race
    blob.ledger.update_release("r-1", lambda r: r.with_(build_attempts=2))  # the next update in flight
    assert [r.id for r in blob.ledger.list_in_flight()] == ["r-1"]


FLEET_OF_TWO = """
apps:
  - name: app
    image: shipbot/app
    environments:
      - {name: staging, target: {kind: local, port: 8081}, rule: on_green}
      - {name: production, target: {kind: local, port: 8080}, rule: schedule, schedule: "0 0 2 * * *"}
  - name: churn
    image: shipbot/churn
    environments:
      - {name: dev, target: {kind: local, port: 8091}, rule: on_green}
"""


@pytest.mark.skipif(not HAS_MEMORY, reason="needs the in-memory adapters")
def test_a_ledger_written_before_the_fleet_is_the_settings_application_once_a_fleet_is_applied(blob_container) -> None:
    """tests/fixtures/ledger-before-fleet: every blob a single-application ShipBot (commit 09829b8, before the
    fleet, the release index and bounded histories) wrote for three releases: one promoted to production,
    one rolled back on staging and held, one building. Read by today's bot with a fleet of two applied."""
    from shared import fleet
    from shared.adapters import memory
    from shared.bot import Bot
    from shared.engine import Config, Engine
    from shared.jobs import Job
    from shared.ports import Ports

    written = Path(__file__).resolve().parents[1] / "fixtures" / "ledger-before-fleet"
    with contextlib.suppress(ResourceExistsError):
        blob_container.create_container()
    for path in sorted(p for p in written.rglob("*") if p.is_file() and p.name != "README.md"):
        blob_container.upload_blob(path.relative_to(written).as_posix(), path.read_bytes())
    old_docs = {p.stem: json.loads(p.read_text()) for p in (written / "releases").glob("*.json")}

    def engine_for(app: fleet.App) -> Engine:
        ledger = BlobLedger(container=blob_container, app="" if app.name == "app" else app.name)
        return Engine(Ports(ledger, memory.MemorySource(), memory.MemoryModels(), memory.MemoryBuilder(),
                            memory.MemoryRegistry(), memory.MemorySmokeRunner(), memory.MemoryDeployer(),
                            memory.MemoryNotifier(), lambda: T0), Config(repository="registry.test/shipbot/app",
                                                                         chain=tuple(app.environments), app=app.name))

    root = BlobLedger(container=blob_container)
    root.put_fleet(FLEET_OF_TWO, by="ops", at=T0, reason="churn joins")
    bot = Bot(ledger=root, default=fleet.parse(FLEET_OF_TWO), engine_for=engine_for, root="app")

    app = bot.engine("app").ledger
    assert {r.id: r.to_json() for r in app.list_releases()} == {
        rid: Release.from_json(doc).to_json() for rid, doc in old_docs.items()}  # every field, every entry
    (building,) = app.list_in_flight()
    assert building.status is Status.BUILDING
    staging, production = app.get_environment("staging"), app.get_environment("production")
    assert production.current.release_id == staging.current.release_id  # staging was rolled back to it
    (second,) = [r for r in app.list_releases() if r.id not in (building.id, production.current.release_id)]
    assert second.held and second.rolled_back and second.deployed == ("staging",)
    assert len(app.environment_history("staging")) == len(json.loads(
        (written / "environments" / "staging.json").read_text())["history"])
    with pytest.raises(errors.Exists):
        app.create_event_marker("e1")  # the events it saw stay seen
    assert bot.engine("churn").ledger.list_releases() == []
    old_job = Job.from_message('{"kind":"rollout","release_id":"%s","environment":"production","by":"ops",'
                               '"reason":"","force":false,"automatic":false}' % production.current.release_id)
    assert bot.engine_of_job(old_job) is bot.engine("app")  # a job queued before the fleet names no application
