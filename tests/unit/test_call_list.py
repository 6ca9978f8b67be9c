"""The Calls list's filters and how its rows read: pure functions of the HTTP edge."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import get_args

import pytest

from application.views import RECORDING_STATUSES
from entrypoints.http.api import RecordingFilter
from entrypoints.http.call_list import (
    CALLER_PATTERN,
    RECORDING_LABELS,
    CallFilters,
    FilterError,
    day_bounds,
    format_duration,
    format_phone,
    iso_utc,
    normalize_caller,
    parse_filters,
    time_zone,
    utc_text,
    zone_or_utc,
)


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ("+15550100001", "+1 (555) 010-0001"),
        ("+442079460958", "+44 207 946 0958"),
        ("+33612345678", "+33 612 345 678"),
        ("+4915123456789", "+49 151 234 567 89"),
        ("+35312345678", "+353 123 456 78"),
        ("+79161234567", "+7 916 123 4567"),
        ("+1555010", "+1 555 010"),  # too short for the NANP: grouped
        ("anonymous", "Anonymous"),
        ("+266696687", "Anonymous"),
        ("client:alice", "client:alice"),
        ("sip:bob@example.com", "sip:bob@example.com"),
    ],
)
def test_a_number_reads_as_people_write_it(number: str, shown: str) -> None:
    assert format_phone(number) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, ""),
        (0, "0:00"),
        (8, "0:08"),
        (61, "1:01"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (37230, "10:20:30"),
    ],
)
def test_a_duration_is_minutes_and_seconds_then_hours(seconds: int | None, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_a_moment_is_iso_utc_for_the_script_and_readable_utc_without_it() -> None:
    moment = datetime(2026, 11, 8, 4, 5, 6, 789, tzinfo=UTC)
    assert iso_utc(moment) == "2026-11-08T04:05:06Z"
    assert utc_text(moment) == "8 Nov 2026, 04:05 UTC"


@pytest.mark.parametrize(
    ("typed", "prefix"),
    [("+1 (555) 010-0001", "+15550100001"), ("1555", "+1555"), (" +44.20 ", "+4420"), ("+7", "+7")],
)
def test_a_caller_number_is_normalized_to_a_prefix_of_e164(typed: str, prefix: str) -> None:
    assert normalize_caller(typed) == prefix


@pytest.mark.parametrize(
    "typed", ["+", "abc", "+1 555 x", "++1", "1234567890123456", "%", "+1_", "1+1", "\t1", "(", ""]
)
def test_a_caller_that_is_no_number_is_refused(typed: str) -> None:
    with pytest.raises(FilterError) as error:
        normalize_caller(typed)
    assert error.value.field == "caller"
    assert not re.fullmatch(CALLER_PATTERN, typed)  # the OpenAPI document says so too


@pytest.mark.parametrize("typed", ["+1 (555) 010-0001", " 1555 ", "(+44).20", "123456789012345", "-7-"])
def test_the_documented_caller_pattern_is_what_is_taken(typed: str) -> None:
    assert re.fullmatch(CALLER_PATTERN, typed) and normalize_caller(typed)


def test_an_unknown_time_zone_means_utc_days_and_says_so() -> None:
    assert zone_or_utc("Asia/Tokyo") == ("Asia/Tokyo", None)
    assert zone_or_utc("") == ("UTC", None)
    for unknown in ("Mars/Olympus", "../../etc/passwd", "x" * 100):
        zone, notice = zone_or_utc(unknown)
        assert zone == "UTC" and notice is not None and "not known here" in notice
    assert parse_filters({"tz": "Mars/Olympus"}) == (CallFilters(), [])
    with pytest.raises(FilterError):
        time_zone("Mars/Olympus")


def test_days_are_whole_days_in_the_viewers_time_zone() -> None:
    start, end = day_bounds(date(2026, 11, 28), date(2026, 11, 28), time_zone("America/New_York"))
    assert start == datetime(2026, 11, 28, 5, tzinfo=UTC)
    assert end == datetime(2026, 11, 29, 5, tzinfo=UTC)
    start, end = day_bounds(date(2026, 3, 8), date(2026, 3, 8), time_zone("America/New_York"))
    assert start is not None and end is not None
    assert (end - start).total_seconds() == 23 * 3600  # the day clocks spring forward
    assert day_bounds(None, date.max) == (None, None)
    assert day_bounds(date(2026, 1, 1), None, time_zone("Asia/Tokyo"))[0] == datetime(
        2025, 12, 31, 15, tzinfo=UTC
    )


def test_a_query_string_gives_its_filters_and_back() -> None:
    params = {
        "from": "2026-11-01",
        "to": "2026-11-28",
        "tz": "Europe/Paris",
        "recording": "failed",
        "caller": "+1 555",
        "hide_non_engagement": "true",
    }
    filters, errors = parse_filters(params)
    assert not errors
    assert filters == CallFilters(
        date(2026, 11, 1), date(2026, 11, 28), "Europe/Paris", "failed", "+1555", hide_non_engagement=True
    )
    assert parse_filters(filters.query()) == (filters, [])
    assert parse_filters({})[0] == CallFilters() and not CallFilters().active
    assert CallFilters(tz="Asia/Tokyo").query() == {}  # a zone alone filters nothing


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "28/11/2026"}, "from"),
        ({"to": "2026-02-30"}, "to"),
        ({"from": "2026-11-28", "to": "2026-11-01"}, "to"),
        ({"recording": "purple"}, "recording"),
        ({"caller": "bob"}, "caller"),
    ],
)
def test_a_bad_filter_names_its_field(params: dict[str, str], field: str) -> None:
    _, errors = parse_filters(params)
    assert [e.field for e in errors] == [field]


def test_the_recording_statuses_are_one_list_everywhere() -> None:
    assert get_args(RecordingFilter) == RECORDING_STATUSES
    assert tuple(RECORDING_LABELS) == RECORDING_STATUSES
