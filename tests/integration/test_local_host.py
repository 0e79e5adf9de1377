"""The local host and its event bridge on the real local stack: Azurite queues and blobs, the distribution
registry's notifications, and the host process itself (python -m stack.host) with SIGTERM.

Each test uses queues and containers no other test uses, and its own state directory. The registry test runs a
registry of its own (scripts/local-stack.sh with a temporary SHIPBOT_STATE and a free port), configured by the
script to notify this test's host, so the shared registry on 127.0.0.1:5000 is never restarted.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import typing
import uuid
from datetime import timedelta
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import docker
import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from shared import events, settings
from stack import config
from stack.bridge import BridgeOptions
from stack.delivery import RetryPolicy
from stack.host import Host
from stack.keys import HostKeys
from stack.testing import eventually, serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AZURITE = settings.AZURITE
KEYS = HostKeys(master="master-key-0123456789", function_keys={"default": "function-key-0123456789"},
                system_keys={"eventgrid_extension": "system-key-0123456789"})


def _azurite_answers() -> bool:
    try:
        httpx.get("http://127.0.0.1:10000/devstoreaccount1?comp=list", timeout=2)
    except httpx.HTTPError:
        return False
    return True


@pytest.fixture(scope="session")
def azurite() -> str:
    if not _azurite_answers():
        run = subprocess.run(["bash", str(ROOT / "scripts/local-stack.sh"), "azurite"], check=False,
                             capture_output=True, text=True, timeout=300)
        if run.returncode != 0 or not _azurite_answers():
            pytest.fail(f"Azurite does not answer; scripts/local-stack.sh azurite said:\n{run.stderr[-2000:]}")
    return AZURITE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def names() -> Iterator[Callable[[str], str]]:
    """name(prefix) -> a queue or container name no other test uses; the queues are deleted afterwards."""
    made: list[str] = []

    def name(prefix: str) -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield name
    for queue in made:
        for suffix in ("", "-poison"):
            client = QueueClient.from_connection_string(AZURITE, queue + suffix)
            if exists(client):
                client.delete_queue()


def exists(queue: QueueClient) -> bool:
    try:
        queue.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True


class Calls:
    """What the functions of a test app saw, thread-safe, with a wait."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            self.items.append(item)

    def wait(self, count: int, timeout: float = 20.0) -> list[Any]:
        eventually(lambda: len(self.items) >= count, timeout=timeout, what=f"{count} invocation(s)")
        return list(self.items)


def host(app: func.FunctionApp, tmp_path: Path, port: int, *, settings: dict[str, str] | None = None,
         host_json: dict | None = None, bridge: BridgeOptions | None = None,
         options: config.HostOptions | None = None) -> Host:
    folder = tmp_path / "app"
    folder.mkdir(parents=True, exist_ok=True)
    if host_json is not None:
        (folder / "host.json").write_text(json.dumps(host_json))
    return Host(app, settings={"SHIPBOT_STORAGE": AZURITE, **(settings or {})}, state_dir=tmp_path / "state",
                folder=folder, url=f"http://127.0.0.1:{port}", host_keys=KEYS, workers=4, bridge=bridge,
                options=options)


def envelope(event: func.EventGridEvent) -> dict[str, Any]:
    """The Event Grid envelope rebuilt from what the function receives, as ShipBot's triggers do."""
    return {"id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
            "eventTime": event.event_time.isoformat(), "data": event.get_json(), "dataVersion": event.data_version}


# -- queues --------------------------------------------------------------------------------------------------
def test_a_queue_trigger_processes_a_message_from_azurite_and_deletes_it(azurite: str, tmp_path: Path,
                                                                         names) -> None:
    queue, calls, port = names("jobs"), Calls(), free_port()
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="SHIPBOT_STORAGE")
    def job(msg: func.QueueMessage) -> None:
        calls.add((msg.id, msg.get_body(), msg.dequeue_count, msg.insertion_time))

    with serving(host(app, tmp_path, port, settings={"JOBS_QUEUE": queue}), port=port):
        client = QueueClient.from_connection_string(azurite, queue)  # the host created it as it started
        sent = client.send_message(base64.b64encode(b'{"verb": "build"}').decode())
        ((message_id, body, dequeue_count, inserted),) = calls.wait(1)
        assert (message_id, body, dequeue_count) == (sent.id, b'{"verb": "build"}', 1)
        assert inserted is not None
        eventually(lambda: client.get_queue_properties().approximate_message_count == 0,
                   what="the message to be deleted")


def test_a_message_that_always_fails_moves_to_the_poison_queue_after_max_dequeue_count(
        azurite: str, tmp_path: Path, names) -> None:
    queue, calls, port = names("fails"), Calls(), free_port()
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=queue, connection="SHIPBOT_STORAGE")
    def always_fails(msg: func.QueueMessage) -> None:
        calls.add(msg.dequeue_count)
        raise RuntimeError("this job never works")

    options = {"version": "2.0", "extensions": {"queues": {"maxDequeueCount": 3, "visibilityTimeout": "00:00:00",
                                                           "maxPollingInterval": "00:00:00.500"}}}
    with serving(host(app, tmp_path, port, host_json=options), port=port):
        client = QueueClient.from_connection_string(azurite, queue)  # the host created it as it started
        content = base64.b64encode(b"poison me").decode()
        client.send_message(content)
        poison = QueueClient.from_connection_string(azurite, f"{queue}-poison")
        eventually(lambda: exists(poison) and poison.peek_messages(max_messages=1), timeout=30,
                   what="the message in the poison queue")
        assert calls.items == [1, 2, 3]
        (moved,) = poison.peek_messages(max_messages=5)
        assert moved.content == content
        eventually(lambda: client.get_queue_properties().approximate_message_count == 0,
                   what="the message to leave its queue")


class Holding:
    """Queue apps whose invocations wait at a gate the test opens, counting what runs on each host."""

    def __init__(self, queue: str) -> None:
        self.queue, self.gate, self.lock = queue, threading.Semaphore(0), threading.Lock()
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.ran: list[tuple[str, str]] = []  # (host, message id), once each invocation is done

    def app(self, label: str) -> func.FunctionApp:
        app = func.FunctionApp()

        @app.queue_trigger(arg_name="msg", queue_name=self.queue, connection="SHIPBOT_STORAGE")
        def hold(msg: func.QueueMessage) -> None:
            with self.lock:
                self.running[label] = self.running.get(label, 0) + 1
                self.peak[label] = max(self.peak.get(label, 0), self.running[label])
            try:
                assert self.gate.acquire(timeout=30), "the test never opened the gate"
            finally:
                with self.lock:
                    self.running[label] -= 1
                    self.ran.append((label, msg.id))

        return app


def test_each_host_runs_up_to_batch_size_plus_new_batch_threshold_and_two_hosts_share_a_queue(
        azurite: str, tmp_path: Path, names) -> None:
    holding, ports = Holding(names("batch")), (free_port(), free_port())
    options = {"version": "2.0", "extensions": {"queues": {"batchSize": 2, "newBatchThreshold": 1}}}
    client = QueueClient.from_connection_string(azurite, holding.queue)
    client.create_queue()
    for n in range(12):
        client.send_message(base64.b64encode(f"job {n}".encode()).decode())
    with serving(host(holding.app("a"), tmp_path / "a", ports[0], host_json=options), port=ports[0]):
        eventually(lambda: holding.running.get("a") == 2, what="a first batch of two")
        holding.gate.release()  # one done: one left running, at the threshold, so another batch of two comes
        eventually(lambda: holding.running.get("a") == 3, what="batchSize + newBatchThreshold running")
        assert not holding.gate.acquire(timeout=0.5) and holding.peak["a"] == 3  # and no fourth
        with serving(host(holding.app("b"), tmp_path / "b", ports[1], host_json=options), port=ports[1]):
            eventually(lambda: holding.running.get("b") == 2, what="the second host's own batch")
            assert holding.running["a"] == 3
            holding.gate.release(100)
            eventually(lambda: len(holding.ran) == 12, timeout=30, what="all twelve messages done")
            eventually(lambda: client.get_queue_properties().approximate_message_count == 0,
                       what="the queue to empty")
    ids = [message for _, message in holding.ran]
    assert len(set(ids)) == 12  # each message ran once, on one host or the other
    assert {label for label, _ in holding.ran} == {"a", "b"}
    assert holding.peak["a"] == 3 and 2 <= holding.peak["b"] <= 3


def test_a_running_message_keeps_its_lease_past_the_first_one(azurite: str, tmp_path: Path, names) -> None:
    """The host receives a message for 10 minutes and renews at half: here a 2 s lease and a 5 s invocation."""
    holding, ports = Holding(names("lease")), (free_port(), free_port())
    short = config.HostOptions(queues=config.QueueOptions(lease=timedelta(seconds=2)))
    client = QueueClient.from_connection_string(azurite, holding.queue)
    client.create_queue()
    client.send_message(base64.b64encode(b"long job").decode())
    first = host(holding.app("a"), tmp_path / "a", ports[0], options=short)
    second = host(holding.app("b"), tmp_path / "b", ports[1], options=short)
    with serving(first, port=ports[0]), serving(second, port=ports[1]):
        eventually(lambda: sum(holding.running.values()) == 1, what="the message running on one host")
        assert not holding.gate.acquire(timeout=5)  # two and a half leases in which the other must not get it
        assert sum(holding.peak.values()) == 1
        holding.gate.release()
        eventually(lambda: len(holding.ran) == 1, what="the invocation done")
        eventually(lambda: client.get_queue_properties().approximate_message_count == 0,
                   what="the message deleted with its renewed receipt")
    assert len(holding.ran) == 1


def test_queue_outputs_are_enqueued_base64_after_the_function_returns(azurite: str, tmp_path: Path, names) -> None:
    single, batch, port = names("out"), names("outs"), free_port()
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="enqueue", methods=["POST"])
    @app.queue_output(arg_name="one", queue_name="%OUT_QUEUE%", connection="SHIPBOT_STORAGE")
    @app.queue_output(arg_name="many", queue_name=batch, connection="SHIPBOT_STORAGE")
    def enqueue(req: func.HttpRequest, one: func.Out[str], many: func.Out[typing.List[str]]) -> func.HttpResponse:
        one.set(req.get_body().decode())
        many.set(["a", "b"])
        return func.HttpResponse(status_code=202)

    @app.route(route="enqueue-then-fail", methods=["POST"])
    @app.queue_output(arg_name="one", queue_name="%OUT_QUEUE%", connection="SHIPBOT_STORAGE")
    def enqueue_then_fail(req: func.HttpRequest, one: func.Out[str]) -> func.HttpResponse:
        one.set("never sent")
        raise RuntimeError("failed after setting the output")

    with serving(host(app, tmp_path, port, settings={"OUT_QUEUE": single}), port=port) as base:
        assert httpx.post(f"{base}/api/enqueue-then-fail", content=b"x").status_code == 500
        assert httpx.post(f"{base}/api/enqueue", content=b'{"release": "r1"}').status_code == 202
    got = QueueClient.from_connection_string(azurite, single).receive_messages(max_messages=5)
    assert [base64.b64decode(m.content) for m in got] == [b'{"release": "r1"}']
    got = QueueClient.from_connection_string(azurite, batch).receive_messages(max_messages=5)
    assert sorted(base64.b64decode(m.content) for m in got) == [b"a", b"b"]


# -- the bridge: blobs ---------------------------------------------------------------------------------------
def blob_app(calls: Calls) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.function_name("model_uploaded")
    @app.event_grid_trigger(arg_name="event")
    def model_uploaded(event: func.EventGridEvent) -> None:
        calls.add(envelope(event))

    return app


def test_the_blob_watcher_turns_an_uploaded_blob_into_a_blob_created_event(azurite: str, tmp_path: Path,
                                                                         names) -> None:
    container_name, calls, port = names("models"), Calls(), free_port()
    container = ContainerClient.from_connection_string(azurite, container_name)
    container.create_container()
    try:
        container.upload_blob("diabetes/1/model.joblib", b"there before the bridge")
        bridge = BridgeOptions(models_container=container_name, poll_interval_s=0.2,
                               policy=RetryPolicy(first_wait_s=0.1, max_wait_s=0.5))
        with serving(host(blob_app(calls), tmp_path, port, bridge=bridge), port=port):
            # The first look is taken before the host answers: an upload from now on is news.
            assert (tmp_path / "state" / "bridge" / "blob-watcher.json").exists()
            uploaded = container.upload_blob("diabetes/3/model.joblib", b"0" * 2048).get_blob_properties()
            (raw,) = calls.wait(1)
        fact = events.parse_blob_created(raw, models_container=container_name)
        assert isinstance(fact, events.ModelUploaded)
        assert (fact.model_name, fact.model_version, fact.blob_name) == ("diabetes", "3", "diabetes/3/model.joblib")
        assert fact.content_length == 2048 and fact.etag.strip('"') == uploaded.etag.strip('"')
        assert fact.url == f"http://127.0.0.1:10000/devstoreaccount1/{container_name}/diabetes/3/model.joblib"
        assert raw["topic"].endswith("/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
        assert raw["data"]["api"] in ("PutBlob", "PutBlockList") and raw["data"]["blobType"] == "BlockBlob"
        assert len(raw["data"]["sequencer"]) == 32

        # Down for a while: a blob uploaded meanwhile arrives after the restart; the old ones are not replayed.
        container.upload_blob("diabetes/4/model.joblib", b"1" * 100)
        port = free_port()
        with serving(host(blob_app(calls), tmp_path, port, bridge=bridge), port=port):
            second = calls.wait(2)[1]
            polls = host_status(port)["bridge"]["polls"]
            eventually(lambda: host_status(port)["bridge"]["polls"] >= polls + 2, what="two more polls")
            assert len(calls.items) == 2
        assert second["subject"].endswith("/blobs/diabetes/4/model.joblib")
        assert second["data"]["sequencer"] > raw["data"]["sequencer"]
    finally:
        container.delete_container()


def host_status(port: int) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{port}/admin/host/status", headers={"x-functions-key": KEYS.master}).json()


# -- the bridge: registry notifications ----------------------------------------------------------------------
@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[tuple[str, Path, Callable[[int], None]]]:
    """(address, state dir, start(notify_port)): a registry started by scripts/local-stack.sh, stopped after."""
    state, address = tmp_path / "registry-state", f"127.0.0.1:{free_port()}"
    started = []

    def start(notify_port: int) -> None:
        env = {**os.environ, "SHIPBOT_STATE": str(state), "SHIPBOT_REGISTRY_ADDR": address,
               "SHIPBOT_REGISTRY_NOTIFY_URL": f"http://127.0.0.1:{notify_port}/runtime/bridge/registry"}
        env.pop("SHIPBOT_REGISTRY_NOTIFY_SECRET", None)
        run = subprocess.run(["bash", str(ROOT / "scripts/local-stack.sh"), "registry"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        started.append(env)

    state.mkdir()
    yield address, state, start
    for env in started:
        subprocess.run(["bash", str(ROOT / "scripts/local-stack.sh"), "down"], env=env, capture_output=True,
                       timeout=60, check=False)


def tiny_image(client: docker.DockerClient, repository: str, tag: str) -> None:
    """`docker import` of a one-file tar: an image in a second, with nothing to pull."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        content = f"shipbot local host test {uuid.uuid4()}\n".encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    client.api.import_image_from_data(data.getvalue(), repository=repository, tag=tag)


def test_a_push_to_the_registry_arrives_as_image_pushed(tmp_path: Path, own_registry, docker_client) -> None:
    address, registry_state, start_registry = own_registry
    calls, port = Calls(), free_port()
    start_registry(port)  # writes the shared secret that the host reads from the same state directory
    app = func.FunctionApp()

    @app.function_name("image_pushed")
    @app.event_grid_trigger(arg_name="event")
    def image_pushed(event: func.EventGridEvent) -> None:
        calls.add(envelope(event))

    local = Host(app, settings={}, state_dir=registry_state, folder=tmp_path, url=f"http://127.0.0.1:{port}",
                 host_keys=KEYS, workers=2, bridge=BridgeOptions(blob_function=None))
    repository, tag = f"{address}/shipbot-test/bridge", "t1"
    tiny_image(docker_client, repository, tag)
    try:
        with serving(local, port=port) as base:
            assert httpx.post(f"{base}/runtime/bridge/registry", content=b"{}").status_code == 401
            for line in docker_client.api.push(repository, tag=tag, stream=True, decode=True):
                assert "error" not in line, line
            (raw,) = calls.wait(1, timeout=30)
            digest = docker_client.images.get_registry_data(f"{repository}:{tag}").id
    finally:
        docker_client.images.remove(f"{repository}:{tag}", force=True)
    fact = events.parse_image_pushed(raw)
    assert isinstance(fact, events.ImagePushed)
    assert (fact.registry, fact.repository, fact.tag) == (address, "shipbot-test/bridge", "t1")
    assert fact.reference == f"{address}/shipbot-test/bridge@{digest}"


# -- the process ---------------------------------------------------------------------------------------------
SLOW_APP = '''
import logging
import pathlib
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="slow")
def slow(req: func.HttpRequest) -> func.HttpResponse:
    pathlib.Path(req.params["marker"]).touch()
    logging.info("working; the request carried %s", req.url)
    time.sleep(1.5)  # the work in flight when SIGTERM comes
    return func.HttpResponse("done")
'''


def test_the_host_process_finishes_running_invocations_on_sigterm_and_logs_no_keys(tmp_path: Path) -> None:
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    port, state, marker = free_port(), tmp_path / "state", tmp_path / "entered"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPBOT_API_KEY", "SHIPBOT_EVENTGRID_KEY"))}
    env["PYTHONPATH"] = str(ROOT)
    log = (tmp_path / "host.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "stack.host", "--port", str(port), "--app", "slowapp:app",
                                "--folder", str(tmp_path), "--state", str(state), "--no-bridge"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        master = eventually(lambda: (state / "host-keys.json").exists() and json.loads(
            (state / "host-keys.json").read_text()), what="the keys file")["master"]
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return httpx.get(f"{base}/admin/host/status", headers={"x-functions-key": master}).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(answers, timeout=30, what="the host to answer")
        result: dict[str, httpx.Response] = {}
        request = threading.Thread(target=lambda: result.setdefault("r", httpx.get(
            f"{base}/api/slow", params={"code": master, "marker": str(marker)}, timeout=30)))
        request.start()
        eventually(marker.exists, what="the invocation to start")
        process.send_signal(signal.SIGTERM)
        request.join(30)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert (result["r"].status_code, result["r"].text) == (200, "done")
    lines = [json.loads(line) for line in (tmp_path / "host.log").read_text().splitlines() if line.startswith("{")]
    assert any(line.get("function") == "slow" and line.get("outcome") == "succeeded" for line in lines)
    assert any(line["message"] == "host stopped" for line in lines)
    text = (tmp_path / "host.log").read_text()
    for secret in json.loads((state / "host-keys.json").read_text())["functionKeys"].values():
        assert secret not in text
    assert master not in text and "working; the request carried" in text
