"""The analyst pages' shared filters: parsed from the URL, validated, and turned into SQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, true

from data.access.sanitize import plain
from data.store.orm import ModelCall

Unit = Literal["hour", "day"]
PRESETS: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
PRESET_LABELS = {
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "custom": "Custom range",
}
DEFAULT_PRESET = "7d"
MAX_HOURLY_SPAN = timedelta(days=14)  # beyond this an hourly chart has too many points to read
MAX_SPAN = timedelta(days=366)
MIN_DAY = date(2000, 1, 1)  # the earliest day a custom range may start (and the date picker)


@dataclass(frozen=True, slots=True)
class Filters:
    """What every analyst figure is computed over: calls with start <= ts < end and the rest."""

    start: datetime
    end: datetime
    preset: str = DEFAULT_PRESET  # a key of PRESETS, or "custom"
    models: tuple[str, ...] = ()
    user: str | None = None
    session: str | None = None
    unit: Unit = "day"
    unit_auto: bool = True

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    def previous(self) -> Filters:
        """The period of the same length just before this one (for deltas)."""
        return replace(self, start=self.start - self.span, end=self.start)

    @property
    def by_user_or_session(self) -> bool:
        """Rollups hold no per-user or per-session time series; such views read raw rows."""
        return bool(self.user or self.session)

    @property
    def whole_days(self) -> bool:
        return self.start.hour == 0 and self.end.hour == 0

    def conditions(
        self, table: Any = None, time: str = "ts", *, with_time: bool = True
    ) -> ColumnElement[bool]:
        """The filter on model_calls, or on a rollup table (`time` names its hour column)."""
        c = (table if table is not None else ModelCall.__table__).c
        parts = [c[time] >= self.start, c[time] < self.end] if with_time else []
        if self.models:
            parts.append(c["model"].in_(self.models))
        if self.user:
            parts.append(c["user_id"] == self.user)
        if self.session:
            parts.append(c["session_id"] == self.session)
        return and_(true(), *parts)

    def to_query(self) -> dict[str, str | list[str]]:
        """The URL query parameters that reproduce this view."""
        query: dict[str, str | list[str]] = {"range": self.preset}
        if self.preset == "custom":
            query["from"] = self.start.date().isoformat()
            query["to"] = (self.end - timedelta(days=1)).date().isoformat()
        if self.models:
            query["model"] = list(self.models)
        if self.user:
            query["user"] = self.user
        if self.session:
            query["session"] = self.session
        if not self.unit_auto:
            query["grain"] = self.unit
        return query


def auto_unit(span: timedelta) -> Unit:
    return "hour" if span <= timedelta(days=3) else "day"


def preset_window(preset: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end): "24h" ends at the next whole hour; the day presets are whole UTC days up to
    and including today, so each day in a daily chart is a complete day."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if PRESETS[preset] < timedelta(days=2):
        return hour - PRESETS[preset], hour
    end = hour.replace(hour=0) + timedelta(days=1) if hour.hour else hour
    return end - PRESETS[preset], end


def _one(params: Mapping[str, str | list[str]], key: str) -> str | None:
    """The last of repeated parameters, without control characters; None when empty."""
    value = params.get(key)
    if isinstance(value, list):
        value = value[-1] if value else None
    value = plain(value).strip() if isinstance(value, str) else None
    return value or None


def _quoted(value: str | None, limit: int = 60) -> str:
    """A parameter as a notice quotes it: repr, clipped."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 2] + "…'"


def _many(params: Mapping[str, str | list[str]], key: str) -> list[str]:
    value = params.get(key)
    values = value if isinstance(value, list) else [value] if value else []
    out: list[str] = []
    for item in values:
        for part in str(item).split(","):
            part = plain(part).strip()
            if part and part not in out:
                out.append(part)
    return out


def _day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_filters(
    params: Mapping[str, str | list[str]], *, known_models: Sequence[str], now: datetime
) -> tuple[Filters, list[str]]:
    """Filters from URL query parameters, and a notice for every value that had to be corrected.

    Parameters: range=24h|7d|30d|90d|custom, from/to=YYYY-MM-DD (UTC days, both included),
    model (repeatable or comma-separated), user, session, grain=hour|day."""
    notices: list[str] = []
    preset = (_one(params, "range") or DEFAULT_PRESET).lower()
    start = end = None
    if preset == "custom":
        raw_from, raw_to = _one(params, "from"), _one(params, "to")
        first, last = _day(raw_from), _day(raw_to)
        if first is None or last is None:
            bad = raw_from if first is None else raw_to
            notices.append(
                f"Could not read the date {_quoted(bad)} (use YYYY-MM-DD); showing the "
                f"{PRESET_LABELS[DEFAULT_PRESET].lower()}."
            )
            preset = DEFAULT_PRESET
        else:
            if first > last:
                notices.append(f"The range was inverted ({first} after {last}); swapped it.")
                first, last = last, first
            today = now.astimezone(UTC).date()
            if first > today:
                notices.append(
                    f"The range starts after today ({first}); showing the "
                    f"{PRESET_LABELS[DEFAULT_PRESET].lower()}."
                )
                preset = DEFAULT_PRESET
            elif last < MIN_DAY:
                notices.append(
                    f"The range ends before {MIN_DAY} ({last}); showing the "
                    f"{PRESET_LABELS[DEFAULT_PRESET].lower()}."
                )
                preset = DEFAULT_PRESET
            else:
                if last > today:
                    notices.append(f"The range ended after today ({last}); it ends today.")
                    last = today
                if first < MIN_DAY:
                    notices.append(f"The range started before {MIN_DAY} ({first}); starts then.")
                    first = MIN_DAY
        if preset == "custom" and first is not None and last is not None:
            start = datetime.combine(first, time(), UTC)
            end = datetime.combine(last + timedelta(days=1), time(), UTC)
            if end - start > MAX_SPAN:
                notices.append("Ranges are limited to 366 days; showing the last 366 days of it.")
                start = end - MAX_SPAN
    elif preset not in PRESETS:
        notices.append(
            f"Unknown range {_quoted(preset)}; showing the {PRESET_LABELS[DEFAULT_PRESET].lower()}."
        )
        preset = DEFAULT_PRESET
    if start is None or end is None:
        start, end = preset_window(preset, now)

    models = _many(params, "model")
    unknown = [m for m in models if m not in known_models]
    if unknown:
        notices.append(
            "Unknown model"
            + ("s " if len(unknown) > 1 else " ")
            + ", ".join(_quoted(m) for m in unknown[:5])
            + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            + " removed from the filter."
        )
    models = [m for m in models if m in known_models]

    grain = _one(params, "grain")
    unit_auto = grain is None
    unit: Unit = auto_unit(end - start)
    if grain is not None:
        if grain not in ("hour", "day"):
            notices.append(f"Unknown granularity {_quoted(grain)}; chosen automatically.")
            unit_auto = True
        elif grain == "hour" and end - start > MAX_HOURLY_SPAN:
            notices.append("Hourly granularity is available up to 14 days; showing days.")
            unit = "day"
        else:
            unit = grain  # type: ignore[assignment]
    user = _one(params, "user")
    session = _one(params, "session")
    for name, value in (("user", user), ("session", session)):
        if value is not None and len(value) > 128:
            notices.append(f"The {name} filter is longer than 128 characters; ignored.")
    user = user if user is None or len(user) <= 128 else None
    session = session if session is None or len(session) <= 128 else None
    return (
        Filters(
            start=start,
            end=end,
            preset=preset,
            models=tuple(models),
            user=user,
            session=session,
            unit=unit,
            unit_auto=unit_auto,
        ),
        notices,
    )
