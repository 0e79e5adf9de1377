"""Dynamic batching: the /score requests that are waiting at the same moment are scored by one call.

A model's fixed cost per call (scikit-learn validates its input on every predict(), ~50-70 us) dwarfs the
cost of one more row, so under load one call for many requests is much cheaper than one call each. No
request ever waits for others: the first request to arrive schedules the flush with `call_soon`, so the
batch is whatever is already queued on the event loop when the flush runs, and a lone request is scored
on the next turn of the loop. Batches are bounded by request count and by body bytes.

Pure event-loop mechanics, no threads and no timers. The scoring callable takes the list of items and
returns one result per item, each a value or an exception for that item alone; if it raises, every
request of the batch gets that error (a timeout, say).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

ScoreBatch = Callable[[list[Any]], Sequence[Any]]


class Batcher:
    def __init__(self, score_batch: ScoreBatch, *, max_items: int, max_bytes: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.score_batch = score_batch
        self.max_items, self.max_bytes = max_items, max_bytes
        self.on_batch = on_batch
        self._pending: list[tuple[Any, int, asyncio.Future[Any]]] = []
        self._scheduled = False

    def submit(self, item: Any, size: int) -> asyncio.Future[Any]:
        """Queue one item (`size` bytes) for the next batch; the future gets its result or its error."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, size, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _take(self) -> list[tuple[Any, int, asyncio.Future[Any]]]:
        """The next batch: at least one item, then while both bounds hold."""
        count, total = 1, self._pending[0][1]
        while count < len(self._pending) and count < self.max_items:
            total += self._pending[count][1]
            if total > self.max_bytes:
                break
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    def _flush(self) -> None:
        batch = self._take()
        if self._pending:  # what did not fit goes in the next turn, after anything else that is ready
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._scheduled = False
        if self.on_batch is not None:
            self.on_batch(len(batch))
        try:
            results = self.score_batch([item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(results)} results")
        except BaseException as e:  # every waiting request hears of it; none is left hanging
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
