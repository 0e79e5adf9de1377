"""Timer triggers on the local host: NCRONTAB schedules, an injected clock, the admin endpoint, past-due runs."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.functions as func
import httpx
import pytest

from shared import ncrontab
from stack.config import ConfigError
from stack.host import Host
from stack.keys import HostKeys
from stack.testing import eventually, serving
from stack.timers import ManualClock

KEYS = HostKeys(master="master-key-0123456789", function_keys={"default": "function-key-0123456789"})
EVENING = datetime(2024, 3, 14, 21, 0, tzinfo=UTC)


class Fired:
    def __init__(self) -> None:
        self.requests: list[func.TimerRequest] = []
        self.event = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, timer: func.TimerRequest) -> None:
        self.requests.append(timer)
        self.event.set()
        assert self.release.wait(10), "the test never released the running timer"


def make_app(fired: Fired, *, schedule: str = "%SHIPBOT_NIGHTLY_SCHEDULE%", on_startup: bool = False):
    app = func.FunctionApp()

    @app.function_name("nightly")
    @app.timer_trigger(arg_name="timer", schedule=schedule, run_on_startup=on_startup)
    def nightly(timer: func.TimerRequest) -> None:
        fired(timer)

    return app


def host_for(tmp_path: Path, fired: Fired, *, clock: ManualClock | None = None, port: int = 7071, **app_options):
    settings = {"SHIPBOT_NIGHTLY_SCHEDULE": "0 30 2 * * *"}
    return Host(make_app(fired, **app_options), settings=settings, state_dir=tmp_path, folder=tmp_path, clock=clock,
                url=f"http://127.0.0.1:{port}", host_keys=KEYS, workers=2)


def test_ncrontab_has_six_fields_seconds_first_and_ands_the_two_day_fields() -> None:
    nightly = ncrontab.parse("0 30 2 * * *")
    assert nightly.next_after(EVENING) == datetime(2024, 3, 15, 2, 30, tzinfo=UTC)
    friday_13th = ncrontab.parse("0 0 0 13 * FRI")  # NCrontab: the 13th AND a Friday (Vixie cron: OR)
    assert friday_13th.next_after(EVENING) == datetime(2024, 9, 13, tzinfo=UTC)
    assert ncrontab.parse("*/15 * * * * *").next_after(EVENING) == EVENING + timedelta(seconds=15)
    for bad in ("0 0 0 L * *", "0 0 0 * * MON#2", "61 * * * * *", "0 0 0 * * FUN"):
        with pytest.raises(ValueError):
            ncrontab.parse(bad)


def test_five_fields_are_read_without_seconds_as_the_host_reads_them() -> None:
    assert ncrontab.parse("30 2 * * *") == ncrontab.parse("0 30 2 * * *")
    assert ncrontab.parse("*/5 * * * *").next_after(EVENING) == EVENING + timedelta(minutes=5)
    for bad in ("* * * *", "0 0 0 * * * 2025"):
        with pytest.raises(ValueError, match="fields"):
            ncrontab.parse(bad)


def test_a_timespan_schedule_is_refused_as_flex_consumption_refuses_it() -> None:
    with pytest.raises(ValueError, match=r"^'00:05:00' is not a valid CRON expression\.$"):
        ncrontab.parse("00:05:00")


def test_a_timer_fires_when_the_injected_clock_reaches_its_schedule(tmp_path: Path) -> None:
    fired, clock = Fired(), ManualClock(EVENING)
    host = host_for(tmp_path, fired, clock=clock)
    host.start()
    try:
        assert not fired.event.wait(0.2)  # 21:00: nothing due
        clock.advance(timedelta(hours=5, minutes=29, seconds=59))
        assert not fired.event.wait(0.2)  # 02:29:59: still nothing
        clock.advance(timedelta(seconds=1))
        assert fired.event.wait(5), "the timer did not fire at 02:30"
        assert fired.requests[0].past_due is False
        assert host.timers.timers["nightly"].next_due == datetime(2024, 3, 16, 2, 30, tzinfo=UTC)
    finally:
        host.stop()


def test_the_admin_endpoint_runs_a_timer_function_now(tmp_path: Path) -> None:
    fired = Fired()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serving(host_for(tmp_path, fired, port=port), port=port) as base:
        url = f"{base}/admin/functions/nightly"
        assert httpx.post(url, json={"input": ""}).status_code == 401
        assert httpx.post(url, json={"input": ""}, params={"code": KEYS.function_keys["default"]}).status_code == 401
        assert httpx.post(f"{base}/admin/functions/nope", json={"input": ""},
                          headers={"x-functions-key": KEYS.master}).status_code == 404
        assert fired.requests == []
        assert httpx.post(url, json={"input": ""}, headers={"x-functions-key": KEYS.master}).status_code == 202
        assert fired.event.wait(5)
        assert len(fired.requests) == 1


def test_run_on_startup_fires_once_at_start(tmp_path: Path) -> None:
    fired = Fired()
    host = host_for(tmp_path, fired, clock=ManualClock(EVENING), on_startup=True)
    host.start()
    try:
        assert fired.event.wait(5)
    finally:
        host.stop()
    assert len(fired.requests) == 1


def test_a_host_that_was_down_at_the_scheduled_time_fires_once_past_due(tmp_path: Path) -> None:
    first = Fired()
    host = host_for(tmp_path, first, clock=ManualClock(EVENING))
    host.start()
    host.stop()  # records "next: 02:30 tomorrow" and goes down for the night
    later = Fired()
    host = host_for(tmp_path, later, clock=ManualClock(EVENING + timedelta(hours=12)))
    host.start()
    try:
        assert later.event.wait(5)
        assert later.requests[0].past_due is True
    finally:
        host.stop()
    assert first.requests == [] and len(later.requests) == 1


def test_a_timer_never_overlaps_itself(tmp_path: Path) -> None:
    fired, clock = Fired(), ManualClock(EVENING)
    fired.release.clear()
    host = host_for(tmp_path, fired, clock=clock, schedule="*/10 * * * * *")
    host.timers.start(thread=False)
    try:
        assert host.timers.tick(EVENING + timedelta(seconds=10)) == ["nightly"]
        assert fired.event.wait(5)
        assert host.timers.tick(EVENING + timedelta(seconds=20)) == []  # the first run still runs
        fired.release.set()
        eventually(lambda: host.timers.timers["nightly"].running.done(), what="the first run to end")
        assert host.timers.tick(EVENING + timedelta(seconds=30)) == ["nightly"]
    finally:
        fired.release.set()
        host.stop()


def test_a_schedule_setting_that_does_not_exist_stops_the_host_from_starting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="%NO_SUCH_SETTING%"):
        host_for(tmp_path, Fired(), schedule="%NO_SUCH_SETTING%")
