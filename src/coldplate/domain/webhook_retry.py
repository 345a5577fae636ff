"""When a failed webhook delivery is tried again, and when an endpoint has failed for too long.

Pure: the dispatcher passes the attempt number, the time and a random source."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

# Delay after the n-th failed attempt (n = 1 is the first). 15 attempts over about 3 days 4 hours.
RETRY_DELAYS_S: tuple[int, ...] = (
    5, 30, 2 * 60, 10 * 60, 30 * 60, 3600, 2 * 3600, 4 * 3600, 8 * 3600,
    12 * 3600, 12 * 3600, 12 * 3600, 12 * 3600, 12 * 3600,
)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
JITTER = 0.2  # each delay is stretched or shrunk by up to 20 %, so a recovering receiver is not stampeded
DISABLE_AFTER = timedelta(days=5)  # an endpoint failing this long without one success is disabled
GONE = 410  # the receiver says the endpoint is gone: disable it at once


def next_attempt_at(*, attempts: int, now: datetime, rng: random.Random | None = None) -> datetime | None:
    """When to try again after `attempts` failed attempts; None when the delivery has run out of tries."""
    if attempts < 1:
        raise ValueError("attempts starts at 1")
    if attempts >= MAX_ATTEMPTS:
        return None
    base = RETRY_DELAYS_S[attempts - 1]
    factor = 1 + (rng or random.Random()).uniform(-JITTER, JITTER)
    return now + timedelta(seconds=base * factor)


def total_retry_window() -> timedelta:
    """The longest a delivery is retried (every delay at its largest jitter)."""
    return timedelta(seconds=sum(RETRY_DELAYS_S) * (1 + JITTER))


def should_disable(*, failing_since: datetime | None, now: datetime) -> bool:
    return failing_since is not None and now - failing_since >= DISABLE_AFTER


def succeeded(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300
