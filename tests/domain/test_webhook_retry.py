"""The retry schedule: about three days of exponential backoff with jitter; five days failing disables."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from coldplate.domain import webhook_retry

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_schedule_spans_about_three_days_and_grows() -> None:
    nominal = timedelta(seconds=sum(webhook_retry.RETRY_DELAYS_S))
    assert timedelta(days=2.5) < nominal < timedelta(days=3.5)
    delays = webhook_retry.RETRY_DELAYS_S
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False))
    assert webhook_retry.total_retry_window() < timedelta(days=4)  # retries end before the endpoint is disabled


@pytest.mark.parametrize("attempts", range(1, webhook_retry.MAX_ATTEMPTS))
def test_each_delay_is_jittered_within_twenty_percent(attempts: int) -> None:
    base = webhook_retry.RETRY_DELAYS_S[attempts - 1]
    seen = set()
    for seed in range(30):
        due = webhook_retry.next_attempt_at(attempts=attempts, now=NOW, rng=random.Random(seed))
        assert due is not None
        seconds = (due - NOW).total_seconds()
        assert base * 0.8 <= seconds <= base * 1.2
        seen.add(round(seconds, 3))
    assert len(seen) > 1  # jitter: not every receiver retries at the same instant


def test_no_attempt_after_the_last() -> None:
    assert webhook_retry.next_attempt_at(attempts=webhook_retry.MAX_ATTEMPTS, now=NOW) is None
    with pytest.raises(ValueError):
        webhook_retry.next_attempt_at(attempts=0, now=NOW)


def test_disable_after_five_days_of_failures_only() -> None:
    assert not webhook_retry.should_disable(failing_since=None, now=NOW)
    assert not webhook_retry.should_disable(failing_since=NOW - timedelta(days=4, hours=23), now=NOW)
    assert webhook_retry.should_disable(failing_since=NOW - timedelta(days=5), now=NOW)


def test_success_is_2xx() -> None:
    assert webhook_retry.succeeded(200) and webhook_retry.succeeded(204)
    assert not any(webhook_retry.succeeded(s) for s in (None, 199, 301, 410, 500))
