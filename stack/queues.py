"""Azure Storage queue triggers and queue output bindings, on Azurite (or any storage account).

`QueueListener` does what the host's queue listener does for one queue-triggered function:
- creates the queue when missing; polls it, at once while there are messages, and with a backoff that doubles
  from 100 ms up to `max_polling_interval` while it is idle;
- receives `batch_size` messages (at most 32, the service's limit), runs them concurrently, and fetches
  another batch whenever no more than `new_batch_threshold` are still running: at most batchSize +
  newBatchThreshold run at once per listener, as in the host, and each host on the queue runs its own;
- receives them invisible for 10 minutes and, while one runs, renews that every 5 minutes (half the
  lease), as the host does, so that a long invocation is not delivered to another host meanwhile;
- decodes the host's default base64 encoding (host.json `messageEncoding` "none" reads the text as it is);
- deletes a message when its invocation succeeded; when it failed, makes it visible again after
  `visibility_timeout`, or, once it was dequeued `max_dequeue_count` times, moves it to `<queue>-poison`
  (also before running it, for a message already dequeued too often, e.g. after a crash);
- `stop()` stops polling, then waits for the running invocations (graceful shutdown).

`QueueSender` sends output binding values: base64-encoded as the host writes them, creating the queue first.
Storage errors never carry a connection string or key into a log line (the SDK's messages do not include
them; we log the queue name only).
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions import queue as azf_queue
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

from stack import config
from stack.functions import Function

log = logging.getLogger("stack.queues")
MIN_POLL = 0.1
MAX_RECEIVE = 32  # Azure Storage queues hand out at most 32 messages per receive

Invoke = Callable[[Function, func.QueueMessage], Any]


class Clients:
    """One QueueServiceClient per connection string, shared by listeners and senders (thread-safe)."""

    def __init__(self) -> None:
        self._services: dict[str, QueueServiceClient] = {}
        self._lock = threading.Lock()

    def queue(self, connection: str, name: str) -> QueueClient:
        with self._lock:
            service = self._services.get(connection)
            if service is None:
                service = self._services[connection] = QueueServiceClient.from_connection_string(connection)
        return service.get_queue_client(name)


def ensure_queue(client: QueueClient) -> QueueClient:
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    return client


class QueueSender:
    """Output bindings: (binding, bodies) -> messages on the binding's queue."""

    def __init__(self, clients: Clients, settings: Mapping[str, str], *, encoding: str = "base64") -> None:
        self._clients, self._settings, self._encoding = clients, settings, encoding
        self._ready: set[tuple[str, str]] = set()

    def __call__(self, binding: Mapping[str, Any], bodies: list[bytes]) -> None:
        what = f"queue output {binding['name']!r}"
        name = config.resolve(binding["queueName"], self._settings, what=what).lower()
        connection = config.connection_string(binding.get("connection"), self._settings, what=what)
        client = self._clients.queue(connection, name)
        if (connection, name) not in self._ready:
            ensure_queue(client)
            self._ready.add((connection, name))
        for body in bodies:
            client.send_message(encode(body, self._encoding))


class QueueListener:
    """The poller of one queue-triggered function."""

    def __init__(self, function: Function, client: QueueClient, poison: QueueClient, invoke: Invoke,
                 pool: Executor, *, options: config.QueueOptions) -> None:
        self.function, self.client, self.poison = function, client, poison
        self._invoke, self._pool, self._options, self._lease = invoke, pool, options, options.lease
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._running: set[Future[None]] = set()
        self._leases = Leases(client, options.lease)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ensure_queue(self.client)
        self._leases.start()
        self._thread = threading.Thread(target=self._loop, name=f"queue-{self.function.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop polling, then wait for the invocations that run (they finish; their messages settle)."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._leases.stop()

    def _loop(self) -> None:
        idle = MIN_POLL
        threshold, batch = max(self._options.threshold, 0), min(self._options.batch_size, MAX_RECEIVE)
        while not self._stopping.is_set():
            with self._changed:  # the host fetches a new batch once no more than newBatchThreshold run
                self._changed.wait_for(lambda: self._stopping.is_set() or len(self._running) <= threshold)
            if self._stopping.is_set():
                break
            try:
                messages = list(self.client.receive_messages(
                    max_messages=batch, messages_per_page=batch,
                    visibility_timeout=int(self._lease.total_seconds())))
            except AzureError as e:
                log.warning("queue %s: receive failed (%s); retrying", self.client.queue_name, type(e).__name__)
                messages = []
            except Exception:  # a bug of ours must not end the polling silently
                log.exception("queue %s: receive failed; retrying", self.client.queue_name)
                messages = []
            if not messages:
                self._stopping.wait(idle)  # idle backoff, interrupted by stop()
                idle = min(idle * 2, max(self._options.max_polling_interval.total_seconds(), MIN_POLL))
                continue
            idle = MIN_POLL
            for message in messages:
                self._leases.hold(message)
                try:
                    future = self._pool.submit(self._process, message)
                except RuntimeError:  # the pool is shut down (stopping): the message reappears after its lease
                    self._leases.release(message)
                    continue
                with self._changed:
                    self._running.add(future)
                future.add_done_callback(self._done)
        with self._changed:
            self._changed.wait_for(lambda: not self._running)

    def _done(self, future: Future[None]) -> None:
        with self._changed:
            self._running.discard(future)
            self._changed.notify_all()

    def _process(self, message: QueueMessage) -> None:
        if message.dequeue_count > self._options.max_dequeue_count:
            self._to_poison(message, "it was dequeued more often than maxDequeueCount before it could run")
            return
        try:
            body = decode(message.content, self._options.message_encoding)
        except ValueError:
            self._to_poison(message, "its body is not base64 (host.json messageEncoding is base64)")
            return
        trigger = azf_queue.QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                                    expiration_time=message.expires_on, insertion_time=message.inserted_on,
                                    time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)
        try:
            self._invoke(self.function, trigger)
        except Exception:  # noqa: BLE001 - the invoker logged it; here it decides retry or poison
            self._failed(message)
        else:
            self._settle(lambda receipt: self.client.delete_message(message.id, receipt), message)

    def _failed(self, message: QueueMessage) -> None:
        if message.dequeue_count >= self._options.max_dequeue_count:
            self._to_poison(message, f"its invocation failed {message.dequeue_count} times (maxDequeueCount)")
        else:
            self._settle(lambda receipt: self.client.update_message(
                message.id, receipt,
                visibility_timeout=int(self._options.visibility_timeout.total_seconds())), message)

    def _to_poison(self, message: QueueMessage, reason: str) -> None:
        def move(receipt: str) -> None:
            ensure_queue(self.poison).send_message(message.content)
            self.client.delete_message(message.id, receipt)

        log.warning("queue %s: message %s moved to %s: %s", self.client.queue_name, message.id,
                    self.poison.queue_name, reason,
                    extra={"fields": {"function": self.function.name, "message_id": message.id,
                                      "dequeue_count": message.dequeue_count}})
        self._settle(move, message)

    def _settle(self, action: Callable[[str], Any], message: QueueMessage) -> None:
        """Ends the lease and settles the message with its latest pop receipt (renewals change it)."""
        receipt = self._leases.release(message)
        if receipt is None:
            log.warning("queue %s: message %s was lost while it ran (its lease could not be renewed)",
                        self.client.queue_name, message.id)
            return
        try:
            action(receipt)
        except ResourceNotFoundError:  # its visibility ran out and another receive owns it now
            log.warning("queue %s: message %s was no longer ours to settle", self.client.queue_name, message.id)
        except AzureError as e:
            log.warning("queue %s: settling message %s failed (%s); it reappears after its visibility timeout",
                        self.client.queue_name, message.id, type(e).__name__)


class Leases:
    """The received messages of one listener, each kept invisible while it runs: renewed at half its lease.

    One thread renews them all, outside the lock (a slow storage account delays nothing else); a message
    being renewed is settled only once its renewal is back, with the receipt it returned. A failed renewal is
    tried again after RENEW_RETRY_S; one the service refuses for good (the message is gone, or its pop receipt
    no longer matches) ends that lease: the message's settle is then skipped with a warning, as in the host.
    """

    RENEW_RETRY_S = 10.0

    def __init__(self, client: QueueClient, lease: timedelta) -> None:
        self._client, self._lease = client, lease
        self._held: dict[str, _Held] = {}
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"leases-{self._client.queue_name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(10)

    def hold(self, message: QueueMessage) -> None:
        with self._changed:
            self._held[message.id] = _Held(message.pop_receipt, time.monotonic() + self._lease.total_seconds() / 2)
            self._changed.notify_all()

    def release(self, message: QueueMessage) -> str | None:
        """Ends the lease: the receipt to settle the message with, None when the lease was lost."""
        with self._changed:
            self._changed.wait_for(lambda: not (held := self._held.get(message.id)) or not held.renewing)
            held = self._held.pop(message.id, None)
        return None if held is None else held.receipt

    def _loop(self) -> None:
        while True:
            with self._changed:
                if self._stopping:
                    return
                now = time.monotonic()
                due = [(id_, held) for id_, held in self._held.items() if held.due <= now]
                if not due:
                    nearest = min((held.due for held in self._held.values()), default=None)
                    self._changed.wait(None if nearest is None else max(nearest - now, 0))
                    continue
                for _, held in due:
                    held.renewing = True
            renewed = [(id_, held, self._renew(id_, held.receipt)) for id_, held in due]  # no lock held
            with self._changed:
                for id_, held, (receipt, ok) in renewed:
                    held.renewing = False
                    if receipt is None:
                        self._held.pop(id_, None)
                        continue
                    held.receipt = receipt
                    wait = self._lease.total_seconds() / 2 if ok else min(self.RENEW_RETRY_S,
                                                                          self._lease.total_seconds() / 2)
                    held.due = time.monotonic() + wait
                self._changed.notify_all()

    def _renew(self, message_id: str, receipt: str) -> tuple[str | None, bool]:
        """(the new receipt, True), (the old one, False) after a failure worth retrying, (None, False) lost."""
        try:
            return self._client.update_message(message_id, receipt,
                                               visibility_timeout=int(self._lease.total_seconds())).pop_receipt, True
        except AzureError as e:
            lost = isinstance(e, ResourceNotFoundError) or getattr(e, "error_code", None) == "PopReceiptMismatch"
            log.warning("queue %s: renewing the lease on message %s failed (%s)%s", self._client.queue_name,
                        message_id, type(e).__name__, "; the message is no longer ours" if lost else "")
            return (None, False) if lost else (receipt, False)


@dataclass
class _Held:
    receipt: str
    due: float  # monotonic time of the next renewal
    renewing: bool = False


def encode(body: bytes, encoding: str) -> str:
    return base64.b64encode(body).decode("ascii") if encoding == "base64" else body.decode("utf-8")


def decode(content: str | bytes, encoding: str) -> bytes:
    raw = content.encode("utf-8") if isinstance(content, str) else content
    if encoding != "base64":
        return raw
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
