"""The Calls list: its filters (the page's and the API's query parameters) and how its rows read.

Dates are whole days in the viewer's time zone (``tz``, an IANA name the page's script fills in from
the browser; UTC without it). The caller filter is a prefix of the E.164 number (``+`` and digits, as
typed with or without spaces, dashes, dots and brackets): a range of an index, so it stays fast on a
large org. "Hide non-engagement" leaves out what settling judged non-engagement (instant hangups,
silent recordings) and calls the scorability filter marked.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from application.views import RECORDING_STATUSES

RECORDING_LABELS = {
    "available": "Available",
    "processing": "Processing",
    "not_recorded": "Not recorded",
    "failed": "Failed",
    "purged": "Deleted",
}
CALL_STATUS_LABELS = {
    "completed": "Completed",
    "no-answer": "No answer",
    "busy": "Busy",
    "canceled": "Canceled",
    "failed": "Failed",
    "in-progress": "In progress",
    "ringing": "Ringing",
}
_PUNCTUATION = re.compile(r"[ ().-]")
_CALLER = re.compile(r"\+?[0-9]{1,15}")
# What ``normalize_caller`` takes, for the OpenAPI document: digits, an optional leading "+", and
# spaces, brackets, dots and dashes anywhere.
CALLER_PATTERN = r"^[ ().-]*\+?([ ().-]*[0-9]){1,15}[ ().-]*$"
_ZONE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
TRUE = ("true", "1", "on")


class FilterError(ValueError):
    """A filter value the list cannot take; ``field`` names the query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def normalize_caller(value: str) -> str:
    """``+`` and the digits of a number or its beginning, as typed (``+1 (555) 010``): ``+1555010``."""
    compact = _PUNCTUATION.sub("", value)
    if not _CALLER.fullmatch(compact):
        raise FilterError("caller", "enter the number or its first digits, with the country code")
    return compact if compact.startswith("+") else f"+{compact}"


@functools.cache
def time_zone_names() -> list[str]:
    """The IANA zones this machine knows (its time zone database), sorted."""
    return sorted(available_timezones())


def time_zone(value: str) -> ZoneInfo:
    """The IANA time zone named (``Europe/Paris``, ``UTC``)."""
    if len(value) > 64 or not _ZONE.fullmatch(value):
        raise FilterError("tz", "not a time zone name")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise FilterError("tz", f"unknown time zone {value!r}") from None


def day_bounds(
    first: date | None, last: date | None, zone: ZoneInfo | None = None
) -> tuple[datetime | None, datetime | None]:
    """From the start of ``first`` to the end of ``last`` (both inclusive) in ``zone``, in UTC."""
    zone = zone or ZoneInfo("UTC")
    if first is not None and last is not None and last < first:
        raise FilterError("to", "the last day comes before the first")
    start = _utc_midnight(first, zone) if first else None
    end = None if last is None or last == date.max else _utc_midnight(last + timedelta(days=1), zone)
    return start, end


def _utc_midnight(day: date, zone: ZoneInfo) -> datetime | None:
    """The start of ``day`` in ``zone``, in UTC; None when that is before the first representable moment
    (day 1 of year 1 east of Greenwich), which bounds nothing."""
    try:
        return datetime.combine(day, time.min, zone).astimezone(UTC)
    except OverflowError:
        return None


def _day(params: Mapping[str, str], field: str) -> date | None:
    value = params.get(field, "").strip()
    if not value:
        return None
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise FilterError(field, "enter a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError(field, f"{value} is not a date") from None


@dataclass(frozen=True)
class CallFilters:
    """What the Calls page filters by, as parsed from its query string."""

    first_day: date | None = None
    last_day: date | None = None
    tz: str = "UTC"
    recording: str | None = None
    caller: str | None = None  # normalized: "+" and digits
    hide_non_engagement: bool = False

    @property
    def active(self) -> bool:
        return any([self.first_day, self.last_day, self.recording, self.caller, self.hide_non_engagement])

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        return day_bounds(self.first_day, self.last_day, ZoneInfo(self.tz))

    def query(self) -> dict[str, str]:
        """The query parameters that give these filters back (for paging links)."""
        params = {
            "from": self.first_day.isoformat() if self.first_day else "",
            "to": self.last_day.isoformat() if self.last_day else "",
            "recording": self.recording or "",
            "caller": self.caller or "",
            "hide_non_engagement": "true" if self.hide_non_engagement else "",
        }
        params = {k: v for k, v in params.items() if v}
        if params and self.tz != "UTC":
            params["tz"] = self.tz
        return params


def parse_filters(params: Mapping[str, str]) -> tuple[CallFilters, list[FilterError]]:
    """The filters of a Calls page query string, and what is wrong with it (nothing applies then).

    A time zone this machine does not know is no error here (a browser may know newer zones): the
    days are UTC days then, and ``zone_notice`` says so.
    """
    errors: list[FilterError] = []
    values: dict[str, object] = {}
    for field, parse in (
        ("first_day", lambda: _day(params, "from")),
        ("last_day", lambda: _day(params, "to")),
        ("recording", lambda: _recording(params.get("recording", "").strip())),
        ("caller", lambda: _caller(params.get("caller", ""))),
    ):
        try:
            values[field] = parse()
        except FilterError as error:
            errors.append(error)
    values["hide_non_engagement"] = params.get("hide_non_engagement", "").lower() in TRUE
    values["tz"] = zone_or_utc(params.get("tz", ""))[0]
    filters = CallFilters(**values)  # type: ignore[arg-type]
    if not errors:
        try:
            filters.bounds()
        except FilterError as error:
            errors.append(error)
    return filters, errors


def zone_or_utc(value: str) -> tuple[str, str | None]:
    """The zone named, or UTC and why, when none or no known one is named."""
    try:
        return time_zone(value.strip()).key, None
    except FilterError:
        shown = value.strip()[:64]
        return "UTC", f"Your time zone {shown!r} is not known here; days are in UTC." if shown else None


def _recording(value: str) -> str | None:
    if value and value not in RECORDING_STATUSES:
        raise FilterError("recording", f"choose one of: {', '.join(RECORDING_STATUSES)}")
    return value or None


def _caller(value: str) -> str | None:
    return normalize_caller(value) if value.strip() else None


# --- how a row reads ----------------------------------------------------------------------------

# Country calling codes of one and two digits (ITU-T E.164 assignments); every other one has three.
_ONE_DIGIT = {"1", "7"}
_TWO_DIGITS = set(
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 66"
    " 81 82 84 86 90 91 92 93 94 95 98".split()
)


def format_phone(number: str) -> str:
    """A number as people write it: ``+1 (555) 010-0001`` in the NANP, ``+44 207 946 0958`` elsewhere
    (the country code, then groups of three with a final four). Anything not E.164 comes back as is."""
    if number.lower() in ("anonymous", "+266696687"):  # how Twilio names a withheld number
        return "Anonymous"
    if not re.fullmatch(r"\+[0-9]{4,15}", number):
        return number
    digits = number[1:]
    if digits[0] == "1" and len(digits) == 11:
        return f"+1 ({digits[1:4]}) {digits[4:7]}-{digits[7:]}"
    cc = 1 if digits[0] in _ONE_DIGIT else 2 if digits[:2] in _TWO_DIGITS else 3
    country, national = digits[:cc], digits[cc:]
    groups = []
    while len(national) > 4:
        groups.append(national[:3])
        national = national[3:]
    return " ".join([f"+{country}", *groups, national]).strip()


def format_duration(seconds: int | None) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on; an empty string when unknown."""
    if seconds is None:
        return ""
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def iso_utc(moment: datetime) -> str:
    """The ``datetime`` attribute of a ``<time>``: ISO 8601 in UTC (``2026-11-28T12:25:13Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc_text(moment: datetime) -> str:
    """What a ``<time>`` says before the script puts it in the viewer's zone: ``28 Nov 2026, 12:25 UTC``."""
    return f"{moment.astimezone(UTC):%d %b %Y, %H:%M} UTC".lstrip("0")
