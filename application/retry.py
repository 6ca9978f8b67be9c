"""Retrying an operation that may succeed if tried again: exponential backoff with full jitter.

One mechanism for both kinds of in-process retry:

- ``retry_conflicts``: a lost optimistic-concurrency race (``ConcurrencyConflict``) is run again
  from a fresh read after a pause of a few milliseconds (``CONFLICT_RETRY``), so racers spread out
  instead of colliding again at once;
- ``retrying`` with a ``RetryPolicy`` of seconds: a remote call that failed in a way that may pass
  (adapters/retry.py holds what is specific to HTTP, such as ``Retry-After``).

What still fails after the last attempt is raised to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from application.errors import ConcurrencyConflict

__all__ = ["CONFLICT_RETRY", "NO_RETRY", "RetryPolicy", "Sleep", "retry_conflicts", "retrying"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_attempts`` attempts; before attempt ``n + 1`` wait ``rand(0, 1) * min(cap_s,
    base_s * 2^(n-1))``, or, when the server said ``Retry-After``, that long plus a little jitter.
    A ``Retry-After`` longer than ``max_retry_after_s`` is not waited for here: the call fails at
    once and the caller's own (longer) retry schedule takes over.
    """

    max_attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 8.0
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s < 0 or self.cap_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("retry policy values must be positive (max_attempts at least 1)")

    def delay(
        self, attempts_made: int, retry_after: float | None, rand: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if attempts_made >= self.max_attempts:
            return None
        backoff = rand() * min(self.cap_s, self.base_s * 2.0 ** (attempts_made - 1))
        if retry_after is None:
            return backoff
        if retry_after > self.max_retry_after_s:
            return None
        return retry_after + min(backoff, 1.0)


NO_RETRY = RetryPolicy(max_attempts=1)

# A lost race: 9 attempts (as many as every conflict loop made before), pauses of up to 5, 10, 20,
# ... ms, each capped at 250 ms: at most about 1 s in all before the conflict is raised.
CONFLICT_RETRY = RetryPolicy(max_attempts=9, base_s=0.005, cap_s=0.25, max_retry_after_s=0.0)


async def retrying(
    call: Callable[[], Awaitable[_T]],
    policy: RetryPolicy,
    *,
    retryable: Callable[[Exception], bool],
    retry_after: Callable[[Exception], float | None] = lambda _error: None,
    sleep: Sleep = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    what: str = "call",
) -> _T:
    """``await call()``, again after a delay while it raises a ``retryable`` error and attempts remain."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return await call()
        except Exception as error:
            if not retryable(error):
                raise
            delay = policy.delay(attempts, retry_after(error), rand)
            if delay is None:
                raise
            log.info("%s failed (attempt %d): %s; retrying in %.3fs", what, attempts, error, delay)
            await sleep(delay)


def _is_conflict(error: Exception) -> bool:
    return isinstance(error, ConcurrencyConflict)


async def retry_conflicts(
    run: Callable[[], Awaitable[_T]],
    *,
    what: str,
    policy: RetryPolicy = CONFLICT_RETRY,
    sleep: Sleep = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> _T:
    """``await run()``, run again from the top after a short jittered pause while it loses a race.

    ``run`` must open its own unit of work, so that each attempt reads afresh.
    """
    return await retrying(run, policy, retryable=_is_conflict, sleep=sleep, rand=rand, what=what)
