"""Service times the agent promises: business hours, and a response time counted inside them.

`TICKET_RESPONSE_TIME` and `ESCALATION_RESPONSE_TIME` are durations of working time ("12h",
"4h", "90m", "1h30m"); `BUSINESS_HOURS` says when the team works ("Mon-Fri 08:00-20:00, Sat
09:00-17:00") in `BUSINESS_TIMEZONE`. A ticket opened at 19:30 on a Friday with a 4-hour
response time is due at 11:30 on Saturday: 30 minutes on Friday, three and a half on Saturday.
All arithmetic is done in UTC between the local opening and closing instants, so a daylight
saving change does not shift a due time."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*$", re.IGNORECASE)
# "Mon-Fri 08:00-20:00" or "Sat 09:00-17:00" (several windows on one day are allowed).
WINDOW = re.compile(
    r"^\s*([a-z]{3})(?:\s*-\s*([a-z]{3}))?\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$",
    re.IGNORECASE,
)
MAX_DAYS_AHEAD = 400  # a due time further out than this means the hours are misconfigured


def parse_duration(text: str) -> timedelta:
    """ "12h", "4.5h", "90m", "1h30m" (or a bare number of hours) as a timedelta; ValueError
    otherwise."""
    value = str(text).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        value += "h"
    match = DURATION.match(value)
    if not value or match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration (expected e.g. 4h, 90m or 1h30m)")
    hours = float(match[1] or 0)
    minutes = int(match[2] or 0)
    duration = timedelta(hours=hours, minutes=minutes)
    if duration <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return duration


def parse_business_hours(text: str) -> dict[int, list[tuple[time, time]]]:
    """The windows of each weekday (0 = Monday) from "Mon-Fri 08:00-20:00, Sat 09:00-17:00";
    ValueError with the offending part otherwise."""
    windows: dict[int, list[tuple[time, time]]] = {}
    parts = [p for p in re.split(r"[,;]", str(text)) if p.strip()]
    if not parts:
        raise ValueError("no business hours given (expected e.g. Mon-Fri 08:00-20:00)")
    for part in parts:
        match = WINDOW.match(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not like 'Mon-Fri 08:00-20:00'")
        first, last = match[1].lower(), (match[2] or match[1]).lower()
        if first not in DAYS or last not in DAYS:
            raise ValueError(f"{part.strip()!r}: days are Mon, Tue, Wed, Thu, Fri, Sat, Sun")
        start_h, start_m, end_h, end_m = (int(match[i]) for i in range(3, 7))
        if start_h > 23 or end_h > 24 or start_m > 59 or end_m > 59 or (end_h == 24 and end_m):
            raise ValueError(f"{part.strip()!r}: not a time of day")
        start = time(start_h, start_m)
        end = time.max if end_h == 24 else time(end_h, end_m)
        if end <= start:
            raise ValueError(f"{part.strip()!r}: the window ends before it starts")
        a, b = DAYS.index(first), DAYS.index(last)
        days = range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]
        for day in days:
            windows.setdefault(day, []).append((start, end))
    for day, spans in windows.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(f"overlapping business hours on {DAYS[day].capitalize()}")
    return windows


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(name).strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone (expected e.g. America/New_York)") from None


@dataclass(frozen=True)
class BusinessHours:
    """When the team works, and working-time arithmetic over it."""

    spec: str
    timezone: str

    def __post_init__(self) -> None:
        parse_business_hours(self.spec)
        parse_timezone(self.timezone)

    @property
    def windows(self) -> dict[int, list[tuple[time, time]]]:
        return parse_business_hours(self.spec)

    @property
    def zone(self) -> ZoneInfo:
        return parse_timezone(self.timezone)

    def _open_spans(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's working windows as UTC instants."""
        zone = self.zone
        spans = []
        for start, end in self.windows.get(day.weekday(), []):
            opens = datetime.combine(day, start, tzinfo=zone).astimezone(UTC)
            if end == time.max:
                closes = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
            else:
                closes = datetime.combine(day, end, tzinfo=zone)
            spans.append((opens, closes.astimezone(UTC)))
        return spans

    def add(self, start: datetime, working: timedelta) -> datetime:
        """The instant `working` time of business hours after `start` (aware, UTC result)."""
        cursor = (start if start.tzinfo else start.replace(tzinfo=UTC)).astimezone(UTC)
        remaining = working
        day = cursor.astimezone(self.zone).date()
        for _ in range(MAX_DAYS_AHEAD):
            for opens, closes in self._open_spans(day):
                begin = max(cursor, opens)
                if begin >= closes:
                    continue
                if remaining <= closes - begin:
                    return begin + remaining
                remaining -= closes - begin
            day += timedelta(days=1)
        raise ValueError(f"no due time within {MAX_DAYS_AHEAD} days for business hours {self.spec}")

    def describe(self) -> str:
        return f"{self.spec} {self.timezone}"


def describe_duration(duration: timedelta) -> str:
    """ "4 working hours", "90 working minutes", "1.5 working hours"."""
    minutes = round(duration.total_seconds() / 60)
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} working hour{'s' if hours != 1 else ''}"
    if minutes < 120:
        return f"{minutes} working minutes"
    return f"{minutes / 60:g} working hours"


@dataclass(frozen=True)
class ServiceLevels:
    """What the agent promises for a ticket and for an escalation."""

    ticket: timedelta
    escalation: timedelta
    hours: BusinessHours

    def response_time(self, kind: str) -> timedelta:
        return self.escalation if kind == "escalation" else self.ticket

    def due(self, kind: str, opened_at: datetime) -> datetime:
        return self.hours.add(opened_at, self.response_time(kind))

    def promise(self, kind: str, opened_at: datetime) -> str:
        """ "within 4 working hours, by Sat 6 Dec 11:30 EST (business hours Mon-Fri ...)"."""
        due = self.due(kind, opened_at).astimezone(self.hours.zone)
        when = f"{due:%a} {due.day} {due:%b %H:%M %Z}"
        return (
            f"within {describe_duration(self.response_time(kind))}, by {when} "
            f"(business hours {self.hours.describe()})"
        )
