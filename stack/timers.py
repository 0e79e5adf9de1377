"""Timer triggers: NCRONTAB schedules in UTC, `run_on_startup`, and the host's schedule monitor.

`Timers` fires each timer function when its next occurrence comes, through `fire(function, TimerRequest)`
(the host submits the invocation to its worker pool and returns the Future). As in the host, a timer never
overlaps itself: an occurrence that comes while the previous run still runs is skipped.

Schedule monitor: the host records each timer's last and next occurrence in storage and, when it starts after
a "next" that has passed (the machine was off at 02:00), fires once at once with `past_due=True`. Here the
status lives in `status_dir/<function>.json`. As in the host, it applies to schedules whose occurrences are a
minute or more apart (`useMonitor` defaults to that).

Time comes from an injected clock: `SystemClock` in the host, `ManualClock` in tests, where `advance()`
wakes the scheduler so a test can "let the night pass" in a millisecond. `tick(now)` fires what is due at
`now` on the calling thread, for tests that drive the schedule themselves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import azure.functions as func
from azure.functions import timer as azf_timer

from shared import ncrontab
from stack.functions import Function

log = logging.getLogger("stack.timers")
MAX_WAIT_S = 30.0  # re-read the clock at least this often (wall clock jumps, suspend/resume)

Fire = Callable[[Function, func.TimerRequest], "Future[object] | None"]


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to; `advance()` wakes whoever listens (the timer scheduler)."""

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, by: timedelta) -> datetime:
        with self._lock:
            self._now += by
            now = self._now
        for listener in list(self._listeners):
            listener()
        return now

    def listen(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)


@dataclass
class Timer:
    function: Function
    schedule: ncrontab.Schedule
    run_on_startup: bool
    use_monitor: bool
    next_due: datetime | None = None
    last: datetime | None = None
    running: Future[object] | None = field(default=None, repr=False)


class Timers:
    """The scheduler thread of all timer functions of one host."""

    def __init__(self, timers: list[Timer], fire: Fire, *, clock: Clock | None = None,
                 status_dir: Path | None = None) -> None:
        self.timers = {t.function.name: t for t in timers}
        self._fire = fire
        self._clock = clock or SystemClock()
        self._status_dir = status_dir
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        listen = getattr(self._clock, "listen", None)
        if listen is not None:
            listen(self._wakeup.set)

    def start(self, *, thread: bool = True) -> None:
        """Fire run_on_startup and past-due timers, then (with `thread`) keep the schedule in the background."""
        now = self._clock.now()
        for timer in self.timers.values():
            status = self._read_status(timer)
            timer.next_due = timer.schedule.next_after(now)
            past_due = timer.use_monitor and status is not None and status < now
            if past_due or timer.run_on_startup:
                self._run(timer, scheduled=status if past_due else now, past_due=past_due)
            else:
                self._write_status(timer, now)
            log.info("timer %s: next occurrences %s", timer.function.name,
                     [t.isoformat() for t in timer.schedule.occurrences(now, 3)],
                     extra={"fields": {"function": timer.function.name, "schedule": timer.schedule.expression}})
        if thread and self.timers:
            self._thread = threading.Thread(target=self._loop, name="timers", daemon=True)
            self._thread.start()

    def tick(self, now: datetime | None = None) -> list[str]:
        """Fire every timer whose occurrence is due at `now`; returns the names fired."""
        now = now or self._clock.now()
        fired = []
        with self._lock:
            for timer in self.timers.values():
                if timer.next_due is None or timer.next_due > now:
                    continue
                scheduled, timer.next_due = timer.next_due, timer.schedule.next_after(now)
                if self._run(timer, scheduled=scheduled, past_due=False):
                    fired.append(timer.function.name)
        return fired

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # a timer that cannot fire must not stop the others
                log.exception("timers: firing failed")
            dues = [t.next_due for t in self.timers.values() if t.next_due is not None]
            wait = (min(dues) - self._clock.now()).total_seconds() if dues else MAX_WAIT_S
            self._wakeup.wait(min(max(wait, 0.0), MAX_WAIT_S))
            self._wakeup.clear()

    def _run(self, timer: Timer, *, scheduled: datetime, past_due: bool) -> bool:
        if timer.running is not None and not timer.running.done():
            log.warning("timer %s: skipping the occurrence at %s, the previous run is still running",
                        timer.function.name, scheduled.isoformat(), extra={"fields": {"function": timer.function.name}})
            return False
        status = {"Last": _iso(timer.last), "Next": _iso(timer.next_due), "LastUpdated": _iso(self._clock.now())}
        request = azf_timer.TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
        timer.last = scheduled
        self._write_status(timer, self._clock.now())
        timer.running = self._fire(timer.function, request)
        return True

    def _status_path(self, timer: Timer) -> Path | None:
        return None if self._status_dir is None else self._status_dir / f"{timer.function.name}.json"

    def _read_status(self, timer: Timer) -> datetime | None:
        """The recorded next occurrence, if a previous run of the host recorded one."""
        path = self._status_path(timer)
        if path is None or not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            recorded = datetime.fromisoformat(doc["Next"])
            timer.last = datetime.fromisoformat(doc["Last"]) if doc.get("Last") else None
        except (ValueError, KeyError, TypeError):
            log.warning("timer %s: ignoring an unreadable status file", timer.function.name)
            return None
        # A schedule edited since: its recorded "next" means nothing for the new one.
        return recorded if doc.get("Schedule") == timer.schedule.expression else None

    def _write_status(self, timer: Timer, now: datetime) -> None:
        path = self._status_path(timer)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"Schedule": timer.schedule.expression, "Last": _iso(timer.last), "Next": _iso(timer.next_due),
               "LastUpdated": _iso(now)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)


def make_timer(function: Function, expression: str) -> Timer:
    """A timer function + its resolved schedule -> Timer (useMonitor as the host defaults it)."""
    schedule = ncrontab.parse(expression)
    first, second = schedule.occurrences(datetime(2001, 1, 1, tzinfo=UTC), 2)
    monitor = function.trigger.get("useMonitor")
    use_monitor = bool(monitor) if monitor is not None else (second - first) >= timedelta(minutes=1)
    return Timer(function=function, schedule=schedule, run_on_startup=bool(function.trigger.get("runOnStartup")),
                 use_monitor=use_monitor)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
