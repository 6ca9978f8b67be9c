"""Retrying a call to a remote service, honouring the server's ``Retry-After``.

The mechanism (``RetryPolicy``, ``retrying``: exponential backoff with full jitter) is
application/retry.py's, the same that retries lost optimistic-concurrency races; this module adds
what is HTTP's. Used by adapters for the calls that are safe to repeat. What still fails after the
last attempt is raised to the caller, whose outbox message is then retried later with its own backoff.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from application.retry import NO_RETRY, RetryPolicy, Sleep, retrying

__all__ = ["MAX_RETRY_AFTER_S", "NO_RETRY", "RetryPolicy", "Sleep", "parse_retry_after", "retrying"]

# Longer than any caller waits (they cap lower still); keeps absurd values finite for timedelta.
MAX_RETRY_AFTER_S = 24 * 3600.0
_SECONDS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, cap_s: float = MAX_RETRY_AFTER_S
) -> float | None:
    """``Retry-After`` in seconds, at most ``cap_s``: delta-seconds (a decimal fraction accepted) or
    an HTTP date (a date already past is 0). None when absent, negative or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if _SECONDS_RE.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": an HTTP date is always GMT
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    if not math.isfinite(seconds):
        return None
    return min(seconds, cap_s)
