"""The event bridge delivers like Event Grid: at-least-once, retried with backoff, dead-lettered, never dropped."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from shared import events
from stack.bridge import Bridge, BridgeOptions
from stack.delivery import Deliverer, RetryPolicy, Subscription
from stack.testing import eventually

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
EVENT = json.loads((FIXTURES / "eventgrid_blob_created.json").read_text())


class Target:
    """A real HTTP endpoint that answers the statuses it is given (then 200) and records what it got."""

    def __init__(self, statuses: list[int] | None = None, *, default: int = 200) -> None:
        self.statuses, self.default = list(statuses or []), default
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                target.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = target.statuses.pop(0) if target.statuses else target.default
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def targets() -> Iterator[list[Target]]:
    made: list[Target] = []
    yield made
    for target in made:
        target.close()


def target(targets: list[Target], *args, **kwargs) -> Target:
    made = Target(*args, **kwargs)
    targets.append(made)
    return made


async def until(check, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "gave up waiting"
        await asyncio.sleep(0.01)


def deliverer(tmp_path: Path, waits: list[float] | None = None, **policy) -> Deliverer:
    async def no_sleep(seconds: float) -> None:  # tenacity's sleep hook: the backoff is recorded, not waited
        if waits is not None:
            waits.append(seconds)

    return Deliverer(tmp_path / "outbox", tmp_path / "deadletter", policy=RetryPolicy(**policy),
                     sleep=no_sleep if waits is not None else None)


def test_a_delivery_is_retried_with_backoff_until_the_target_answers_200(tmp_path: Path, targets) -> None:
    endpoint, waits = target(targets, [503, 500]), []

    async def scenario() -> Deliverer:
        d = deliverer(tmp_path, waits, max_attempts=5)
        d.subscribe(Subscription("model-uploaded", f"{endpoint.url}/hook?functionName=f&code=k"))
        await d.start()
        assert d.enqueue("model-uploaded", EVENT)
        await until(lambda: d.delivered == 1)
        await d.stop()
        return d

    d = asyncio.run(scenario())
    assert len(endpoint.requests) == 3
    assert [h["aeg-delivery-count"] for _, h, _ in endpoint.requests] == ["0", "1", "2"]
    path, headers, body = endpoint.requests[-1]
    assert parse_qs(urlsplit(path).query) == {"functionName": ["f"], "code": ["k"]}
    assert headers["aeg-event-type"] == "Notification" and headers["aeg-subscription-name"] == "MODEL-UPLOADED"
    assert headers["content-type"] == "application/json" and headers["aeg-metadata-version"] == "1"
    assert json.loads(body) == [EVENT]
    assert waits == sorted(waits) and len(waits) == 2 and waits[0] < waits[1]
    assert d.pending() == 0 and not (tmp_path / "deadletter").exists()


def test_an_event_that_exhausts_its_attempts_is_dead_lettered_with_the_reason(tmp_path: Path, targets) -> None:
    endpoint = target(targets, default=503)

    async def scenario() -> None:
        d = deliverer(tmp_path, [], max_attempts=3)
        d.subscribe(Subscription("model-uploaded", endpoint.url))
        await d.start()
        d.enqueue("model-uploaded", EVENT)
        await until(lambda: d.dead_lettered == 1)
        await d.stop()

    asyncio.run(scenario())
    assert len(endpoint.requests) == 3
    (dead,) = json.loads((tmp_path / "deadletter" / "model-uploaded" / f"{EVENT['id']}.json").read_text())
    assert dead["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert (dead["deliveryAttempts"], dead["lastHttpStatusCode"]) == (3, 503)
    assert dead["id"] == EVENT["id"] and dead["data"] == EVENT["data"]
    assert not list((tmp_path / "outbox").glob("*/*.json"))


def test_a_400_answer_is_not_retried_but_dead_lettered_at_once(tmp_path: Path, targets) -> None:
    endpoint = target(targets, default=400)

    async def scenario() -> None:
        d = deliverer(tmp_path, [], max_attempts=10)
        d.subscribe(Subscription("model-uploaded", endpoint.url))
        await d.start()
        d.enqueue("model-uploaded", EVENT)
        await until(lambda: d.dead_lettered == 1)
        await d.stop()

    asyncio.run(scenario())
    assert len(endpoint.requests) == 1
    (dead,) = json.loads((tmp_path / "deadletter" / "model-uploaded" / f"{EVENT['id']}.json").read_text())
    assert dead["deadLetterReason"] == "UndeliverableDueToHttpBadRequest"


def test_a_failing_subscription_does_not_hold_up_another(tmp_path: Path, targets) -> None:
    down, up = target(targets, default=503), target(targets)

    async def scenario() -> None:
        d = Deliverer(tmp_path / "outbox", tmp_path / "deadletter",
                      policy=RetryPolicy(max_attempts=1000, first_wait_s=0.05, max_wait_s=0.05))
        d.subscribe(Subscription("down", down.url))
        d.subscribe(Subscription("up", up.url))
        await d.start()
        d.enqueue("down", {**EVENT, "id": "stuck"})
        await until(lambda: len(down.requests) >= 2)
        d.enqueue("up", {**EVENT, "id": "fine"})
        await until(lambda: d.delivered == 1)
        assert d.pending() == 1  # "stuck" is still being retried
        await d.stop()

    asyncio.run(scenario())
    assert json.loads(up.requests[0][2])[0]["id"] == "fine"
    assert (tmp_path / "outbox" / "down" / "stuck.json").exists()  # kept for the next start, not dropped


def test_a_restarted_deliverer_replays_its_outbox(tmp_path: Path, targets) -> None:
    down, up = target(targets, default=503), target(targets)

    async def while_down() -> None:
        d = Deliverer(tmp_path / "outbox", tmp_path / "deadletter",
                      policy=RetryPolicy(max_attempts=1000, first_wait_s=0.05, max_wait_s=0.05))
        d.subscribe(Subscription("model-uploaded", down.url))
        await d.start()
        d.enqueue("model-uploaded", EVENT)
        await until(lambda: len(down.requests) >= 2)
        await d.stop()

    asyncio.run(while_down())

    async def after_restart() -> None:
        d = deliverer(tmp_path, [])
        d.subscribe(Subscription("model-uploaded", up.url))
        await d.start()
        await until(lambda: d.delivered == 1)
        await d.stop()

    asyncio.run(after_restart())
    assert json.loads(up.requests[0][2]) == [EVENT]


def test_a_registry_notification_becomes_image_pushed_deliveries(tmp_path: Path, targets) -> None:
    endpoint = target(targets)
    bridge = Bridge(state_dir=tmp_path, host_url=endpoint.url, eventgrid_key="system-key", storage=None,
                    registry_secret="shared-secret", options=BridgeOptions(blob_function=None))
    assert bridge.authorizes("Bearer shared-secret")
    assert not bridge.authorizes("Bearer wrong") and not bridge.authorizes(None)
    bridge.start()
    try:
        assert bridge.accept_registry((FIXTURES / "registry_notification.json").read_bytes()) == 1  # 1 manifest push
        eventually(lambda: bridge.deliverer.delivered == 1, what="the ImagePushed delivery")
        assert bridge.accept_registry(b"{not json") == 0  # dead-lettered, not refused
    finally:
        bridge.stop()
    path, _, body = endpoint.requests[0]
    assert parse_qs(urlsplit(path).query) == {"functionName": ["image_pushed"], "code": ["system-key"]}
    (event,) = json.loads(body)
    pushed = events.parse_image_pushed(event)
    assert isinstance(pushed, events.ImagePushed)
    assert pushed.reference == ("127.0.0.1:5000/shipbot/diabetes@"
                                "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf")
    assert len(list((tmp_path / "deadletter" / "registry").glob("*.json"))) == 1
