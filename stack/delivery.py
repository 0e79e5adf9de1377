"""Event Grid's delivery, for the local event bridge: at-least-once, retried with backoff, then dead-lettered.

Each event goes to one subscription (a webhook URL: the host's /runtime/webhooks/eventgrid?functionName=...)
as Event Grid sends it: a JSON array holding that one event, `Content-Type: application/json` and the aeg-*
headers (`aeg-event-type: Notification`, `aeg-subscription-name`, `aeg-delivery-count`: attempts made before
this one, `aeg-data-version`, `aeg-metadata-version`).

- Durable: `enqueue()` writes the event to `<outbox>/<subscription>/<id>.json` before it returns, so the source
  may acknowledge (the registry) or record it as seen (the blob watcher); a restarted bridge replays its outbox.
- Retries (tenacity): any non-2xx answer, a timeout or a connection error, with exponential backoff, until
  `max_attempts` or the event's time to live is spent. As Event Grid does for webhooks, 400, 401, 403 and 413
  are not retried. Deliveries are independent tasks: one endpoint that fails never holds up another event.
- Never dropped silently: an event that cannot be delivered is written, with the reason, to
  `<deadletter>/<subscription>/<id>.json` (Event Grid's dead-letter fields: deadLetterReason, deliveryAttempts,
  lastDeliveryOutcome, lastHttpStatusCode, publishTime, lastDeliveryAttemptTime) and logged.

Subscription URLs carry a key: they are never logged; the subscription's name is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

log = logging.getLogger("stack.delivery")
NOT_RETRIED = frozenset({400, 401, 403, 413})
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class RetryPolicy:
    """Event Grid's is 30 attempts over 24 hours (10 s, 30 s, 1 min, 5 min, ... hourly); locally shorter."""

    max_attempts: int = 12
    time_to_live: timedelta = timedelta(minutes=30)
    first_wait_s: float = 0.5  # doubles after each failure...
    max_wait_s: float = 60.0  # ...up to this
    timeout_s: float = 30.0  # Event Grid waits 30 s for an answer


@dataclass(frozen=True)
class Subscription:
    name: str  # e.g. "model-uploaded"; Event Grid sends it upper-cased in aeg-subscription-name
    url: str  # carries the key: never logged


class _Retry(Exception):
    def __init__(self, outcome: str, status: int | None = None) -> None:
        super().__init__(outcome)
        self.outcome, self.status = outcome, status


class _Undeliverable(_Retry):
    pass


Sleep = Callable[[float], Awaitable[None]]


class Deliverer:
    """Delivers events on the running asyncio loop; `enqueue` may be called from any thread."""

    def __init__(self, outbox: Path, deadletter: Path, *, policy: RetryPolicy | None = None,
                 sleep: Sleep | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.outbox, self.deadletter = outbox, deadletter
        self.policy = policy or RetryPolicy()
        self._sleep = sleep or asyncio.sleep
        self._transport = transport
        self._subscriptions: dict[str, Subscription] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: set[Path] = set()
        self.delivered = 0
        self.dead_lettered = 0

    def subscribe(self, subscription: Subscription) -> None:
        self._subscriptions[subscription.name] = subscription

    async def start(self) -> None:
        """On the loop that will deliver: open the HTTP client and replay what the outbox still holds."""
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(transport=self._transport, timeout=self.policy.timeout_s)
        for path in sorted(self.outbox.glob("*/*.json")):
            self._spawn(path)

    async def stop(self) -> None:
        """Cancel the deliveries in flight: their events stay in the outbox for the next start."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def enqueue(self, subscription: str, event: dict[str, Any]) -> bool:
        """Persist `event` for `subscription`, then deliver it. False when that event id is already pending."""
        if subscription not in self._subscriptions:
            raise KeyError(f"no subscription named {subscription!r}")
        path = self.outbox / subscription / f"{_SAFE.sub('_', str(event['id']))}.json"
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"subscription": subscription, "enqueued": _now().isoformat(), "event": event}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._spawn, path)
        return True

    def pending(self) -> int:
        return len(list(self.outbox.glob("*/*.json")))

    def _spawn(self, path: Path) -> None:
        if path in self._pending:
            return
        self._pending.add(path)
        task = asyncio.get_running_loop().create_task(self._deliver(path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._pending.discard(path))

    async def _deliver(self, path: Path) -> None:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("bridge: skipping an unreadable outbox file %s", path.name)
            return
        subscription = self._subscriptions.get(record["subscription"])
        event = record["event"]
        if subscription is None:
            self._dead_letter(path, record, reason="NoSubscription", attempts=0, outcome="NoSubscription", status=None)
            return
        age = _now() - datetime.fromisoformat(record["enqueued"])
        remaining = max((self.policy.time_to_live - age).total_seconds(), 0.0)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts) | stop_after_delay(remaining),
            wait=wait_exponential(multiplier=self.policy.first_wait_s, max=self.policy.max_wait_s),
            retry=retry_if_exception(lambda e: isinstance(e, _Retry) and not isinstance(e, _Undeliverable)),
            sleep=self._sleep, reraise=True)
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    await self._post(subscription, event, attempts - 1)
        except _Undeliverable as e:
            self._dead_letter(path, record, reason=f"UndeliverableDueToHttp{e.outcome}", attempts=attempts,
                              outcome=e.outcome, status=e.status)
        except _Retry as e:
            reason = "MaxDeliveryAttemptsExceeded" if attempts >= self.policy.max_attempts else "TimeToLiveExceeded"
            self._dead_letter(path, record, reason=reason, attempts=attempts, outcome=e.outcome, status=e.status)
        else:
            self.delivered += 1
            path.unlink(missing_ok=True)
            log.info("bridge: delivered event %s to %s after %d attempt(s)", event.get("id"), subscription.name,
                     attempts, extra={"fields": {"event_id": event.get("id"), "subscription": subscription.name,
                                                 "attempts": attempts}})

    async def _post(self, subscription: Subscription, event: dict[str, Any], delivery_count: int) -> None:
        assert self._client is not None
        headers = {"content-type": "application/json", "aeg-event-type": "Notification",
                   "aeg-subscription-name": subscription.name.upper(), "aeg-delivery-count": str(delivery_count),
                   "aeg-data-version": str(event.get("dataVersion", "")),
                   "aeg-metadata-version": str(event.get("metadataVersion", "1"))}
        try:
            response = await self._client.post(subscription.url, content=json.dumps([event]), headers=headers)
        except httpx.TimeoutException:
            raise _Retry("TimedOut") from None
        except httpx.TransportError as e:
            raise _Retry(f"ConnectionError ({type(e).__name__})") from None
        if response.is_success:
            return
        outcome = response.reason_phrase.replace(" ", "") or str(response.status_code)
        if response.status_code in NOT_RETRIED:
            raise _Undeliverable(outcome, response.status_code)
        raise _Retry(outcome, response.status_code)

    def _dead_letter(self, path: Path, record: dict[str, Any], *, reason: str, attempts: int, outcome: str,
                     status: int | None) -> None:
        target = self.deadletter / record["subscription"] / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        now = _now().isoformat()
        dead = {**record["event"], "deadLetterReason": reason, "deliveryAttempts": attempts,
                "lastDeliveryOutcome": outcome, "lastHttpStatusCode": status or 0,
                "publishTime": record["enqueued"], "lastDeliveryAttemptTime": now}
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps([dead], indent=2))
        tmp.replace(target)
        path.unlink(missing_ok=True)
        self.dead_lettered += 1
        log.warning("bridge: dead-lettered event %s for %s: %s after %d attempt(s), last outcome %s",
                    record["event"].get("id"), record["subscription"], reason, attempts, outcome,
                    extra={"fields": {"event_id": record["event"].get("id"), "subscription": record["subscription"],
                                      "reason": reason, "deadletter": str(target)}})


def _now() -> datetime:
    return datetime.now(UTC)
