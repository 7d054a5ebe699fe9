"""URL filters: every value has a defined outcome, and a link reproduces the view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from data.analytics.filters import Filters, parse_filters

NOW = datetime(2026, 11, 25, 6, 30, tzinfo=UTC)
MODELS = ["gpt-4o", "gpt-4o-mini"]


def parse(**params: str | list[str]) -> tuple[Filters, list[str]]:
    return parse_filters(params, known_models=MODELS, now=NOW)


@pytest.mark.parametrize(("preset", "days"), [("24h", 1), ("7d", 7), ("30d", 30), ("90d", 90)])
def test_presets_end_at_the_next_whole_hour_or_day(preset: str, days: int) -> None:
    filters, notices = parse(range=preset)
    assert notices == []
    # 24 hours end at the next whole hour; the day presets are whole UTC days including today.
    end = datetime(2026, 11, 25, 7, tzinfo=UTC) if days == 1 else datetime(2026, 11, 26, tzinfo=UTC)
    assert filters.end == end
    assert filters.span == timedelta(days=days)
    assert filters.unit == ("hour" if days <= 3 else "day")


def test_defaults() -> None:
    filters, notices = parse()
    assert (filters.preset, filters.models, filters.user, filters.session) == ("7d", (), None, None)
    assert notices == []


def test_custom_range_includes_both_days() -> None:
    filters, notices = parse(range="custom", **{"from": "2026-11-01", "to": "2026-11-03"})
    assert (filters.start, filters.end) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 4, tzinfo=UTC),
    )
    assert filters.unit == "hour" and notices == []


@pytest.mark.parametrize(
    ("params", "notice", "check"),
    [
        (
            {"range": "custom", "from": "2026-11-10", "to": "2026-11-01"},
            "The range was inverted (2026-11-10 after 2026-11-01); swapped it.",
            lambda f: f.start == datetime(2026, 11, 1, tzinfo=UTC),
        ),
        (
            {"range": "custom", "from": "2026-02-30", "to": "2026-03-01"},
            "Could not read the date '2026-02-30' (use YYYY-MM-DD); showing the last 7 days.",
            lambda f: f.preset == "7d",
        ),
        (
            {"range": "custom"},
            "Could not read the date None (use YYYY-MM-DD); showing the last 7 days.",
            lambda f: f.preset == "7d",
        ),
        (
            {"range": "forever"},
            "Unknown range 'forever'; showing the last 7 days.",
            lambda f: f.preset == "7d",
        ),
        (
            {"model": ["gpt-4o", "gpt-9"]},
            "Unknown model 'gpt-9' removed from the filter.",
            lambda f: f.models == ("gpt-4o",),
        ),
        (
            {"model": "x,y"},
            "Unknown models 'x', 'y' removed from the filter.",
            lambda f: f.models == (),
        ),
        (
            {"range": "90d", "grain": "hour"},
            "Hourly granularity is available up to 14 days; showing days.",
            lambda f: f.unit == "day",
        ),
        (
            {"grain": "minute"},
            "Unknown granularity 'minute'; chosen automatically.",
            lambda f: f.unit_auto,
        ),
        (
            {"user": "u" * 129},
            "The user filter is longer than 128 characters; ignored.",
            lambda f: f.user is None,
        ),
        (
            {"range": "custom", "from": "2020-01-01", "to": "2026-01-01"},
            "Ranges are limited to 366 days; showing the last 366 days of it.",
            lambda f: f.span == timedelta(days=366),
        ),
    ],
)
def test_bad_values_are_corrected_with_a_notice(params, notice, check) -> None:  # type: ignore[no-untyped-def]
    filters, notices = parse_filters(params, known_models=MODELS, now=NOW)
    assert notices == [notice]
    assert check(filters)


@pytest.mark.parametrize(
    "params",
    [
        {"range": "30d"},
        {
            "range": "custom",
            "from": "2026-10-01",
            "to": "2026-10-31",
            "model": ["gpt-4o"],
            "user": "alice",
            "session": "s1",
            "grain": "day",
        },
        {"range": "24h", "grain": "hour", "model": ["gpt-4o", "gpt-4o-mini"]},
    ],
)
def test_a_link_reproduces_the_view(params: dict[str, str | list[str]]) -> None:
    filters, _ = parse_filters(params, known_models=MODELS, now=NOW)
    again, notices = parse_filters(filters.to_query(), known_models=MODELS, now=NOW)
    assert again == filters and notices == []


def test_previous_period_has_the_same_length() -> None:
    filters, _ = parse(range="7d")
    before = filters.previous()
    assert before.end == filters.start and before.span == filters.span
