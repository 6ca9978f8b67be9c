"""The call page's plain words: numbers, lengths."""

from __future__ import annotations

import pytest

from entrypoints.http.call_page import clock, phone_number


@pytest.mark.parametrize(
    ("e164", "shown"),
    [("+15550200001", "+1 (555) 020-0001"), ("+442079460018", "+442079460018"), ("+1555", "+1555")],
)
def test_north_american_numbers_are_grouped_and_others_stay_as_they_are(e164: str, shown: str) -> None:
    assert phone_number(e164) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"), [(None, ""), (0, "0:00"), (8, "0:08"), (75.9, "1:15"), (3725, "1:02:05")]
)
def test_lengths_read_as_minutes_and_seconds(seconds: float | None, shown: str) -> None:
    assert clock(seconds) == shown
