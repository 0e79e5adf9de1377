"""NCRONTAB schedules, as the Azure Functions timer trigger reads them: six fields (or five), UTC (or the time zone
an environment's schedule names).

    {second} {minute} {hour} {day} {month} {day-of-week}       e.g. "0 30 2 * * *" (02:30:00 every day)
    {minute} {hour} {day} {month} {day-of-week}                e.g. "30 2 * * *"   (the same, seconds 0)

Fields take numbers, `*`, lists (`1,15`), ranges (`1-5`), steps (`*/5`, `0-30/10`) and English month and day
names (JAN, MON); day-of-week counts from Sunday = 0. Parsing and the calendar arithmetic are croniter's; this
module only holds NCRONTAB's differences from Vixie cron:
- six fields with the seconds first; five fields are read without seconds (the host parses with
  IncludingSeconds unless there are exactly five), any other count is refused;
- day-of-month and day-of-week are ANDed (NCrontab matches a day only when both fields match, where Vixie cron
  ORs them when both are restricted);
- no croniter extensions (`L`, `#`, `H`, `?`), which NCrontab does not know;
- a TimeSpan (`hh:mm:ss`) is refused with the host's message: ShipBot runs on Flex Consumption, where the host
  takes CRON expressions only (TimeSpans work on App Service plans alone).

The local host's timers (stack/timers.py) and the fleet's `schedule` rules (shared/fleet.py) both read them here.
Pure. No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from croniter import croniter

_FIELD = re.compile(r"[0-9A-Za-z*,/-]+")
_NAMES = re.compile(r"[A-Za-z]+")
_KNOWN_NAMES = frozenset({"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
                          "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"})
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2}))?")


@dataclass(frozen=True, slots=True)
class Schedule:
    """One timer's schedule: `next_after(moment)` is the first occurrence strictly after `moment` (UTC)."""

    expression: str  # six fields, seconds first

    def next_after(self, moment: datetime, zone: tzinfo = UTC) -> datetime:
        """In UTC; the fields are read as wall-clock time in `zone` (daylight saving included)."""
        moment = _utc(moment).astimezone(zone)
        return croniter(self.expression, moment, ret_type=datetime, day_or=False,
                        second_at_beginning=True).get_next(datetime).astimezone(UTC)

    def last_due(self, since: datetime, now: datetime, zone: tzinfo = UTC) -> datetime | None:
        """The latest occurrence in (since, now], or None: however many were missed, a schedule that was
        down fires once when it is back."""
        moment = _utc(now).astimezone(zone)
        last = croniter(self.expression, moment + timedelta(microseconds=1), ret_type=datetime, day_or=False,
                        second_at_beginning=True).get_prev(datetime).astimezone(UTC)
        return last if _utc(since) < last <= _utc(now) else None

    def occurrences(self, start: datetime, count: int) -> list[datetime]:
        """The next `count` occurrences after `start` (what the host logs at start-up: its next five)."""
        out, moment = [], start
        for _ in range(count):
            moment = self.next_after(moment)
            out.append(moment)
        return out


def parse(expression: str) -> Schedule:
    """An NCRONTAB expression -> Schedule; ValueError names what is wrong with it."""
    text = " ".join(expression.split())
    if _TIMESPAN.fullmatch(text):
        raise ValueError(f"'{expression}' is not a valid CRON expression.")
    fields = text.split(" ")
    if len(fields) == 5:
        fields.insert(0, "0")
    if len(fields) != 6:
        raise ValueError(f"schedule {expression!r} has {len(fields)} fields; NCRONTAB takes 6: "
                         "{second} {minute} {hour} {day} {month} {day-of-week}, or 5 without the seconds")
    text = " ".join(fields)
    for field in fields:
        if not _FIELD.fullmatch(field):
            raise ValueError(f"schedule {expression!r}: field {field!r} is not NCRONTAB")
        unknown = {name.upper() for name in _NAMES.findall(field)} - _KNOWN_NAMES
        if unknown:
            raise ValueError(f"schedule {expression!r}: {sorted(unknown)} are not month or day names")
    if not croniter.is_valid(text, second_at_beginning=True):
        raise ValueError(f"schedule {expression!r} is not a valid NCRONTAB expression")
    return Schedule(text)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("schedules work on aware datetimes (UTC); got a naive one")
    return moment.astimezone(UTC)
