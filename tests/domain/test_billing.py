"""Billing arithmetic: pieces, the minimum, rounding, month boundaries, reservations, thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coldplate.domain import billing
from coldplate.domain.billing import COMPUTE, RESERVATION, STORAGE

T0 = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


def test_a_run_is_charged_per_second_at_its_rate() -> None:
    [charge] = billing.close(COMPUTE, start=T0, end=T0 + timedelta(seconds=90), rate_micros=3_600_000,
                             billed_before_s=0, run_ends=True)
    assert (charge.seconds, charge.amount_micros, charge.period_start) == (90, 90_000, T0)


def test_a_short_run_costs_the_minimum() -> None:
    [charge] = billing.close(COMPUTE, start=T0, end=T0 + timedelta(seconds=5), rate_micros=3_600_000,
                             billed_before_s=0, run_ends=True)
    assert (charge.seconds, charge.amount_micros, charge.period_end) == (60, 60_000, T0 + timedelta(seconds=5))


def test_a_zero_length_run_still_costs_the_minimum() -> None:
    [charge] = billing.close(COMPUTE, start=T0, end=T0, rate_micros=3_600_000, billed_before_s=0, run_ends=True)
    assert charge.seconds == 60 and charge.period_start == charge.period_end == T0


def test_the_minimum_counts_what_the_run_already_billed() -> None:
    charges = billing.close(COMPUTE, start=T0, end=T0 + timedelta(seconds=10), rate_micros=3_600_000,
                            billed_before_s=40, run_ends=True)
    assert [c.seconds for c in charges] == [20]
    assert billing.close(COMPUTE, start=T0, end=T0 + timedelta(seconds=10), rate_micros=3_600_000,
                         billed_before_s=40, run_ends=False)[0].seconds == 10


def test_storage_has_no_minimum() -> None:
    [charge] = billing.close(STORAGE, start=T0, end=T0 + timedelta(seconds=5), rate_micros=3_600_000,
                             billed_before_s=0, run_ends=True)
    assert charge.seconds == 5


def test_fractions_of_a_second_are_dropped_at_both_ends() -> None:
    [charge] = billing.close(COMPUTE, start=T0 + timedelta(microseconds=900_000),
                             end=T0 + timedelta(seconds=100, microseconds=400_000), rate_micros=3_600_000,
                             billed_before_s=0, run_ends=True)
    assert charge.seconds == 100 and charge.period_start == T0


def test_a_run_across_a_month_boundary_is_split_at_midnight() -> None:
    start = datetime(2026, 1, 31, 23, 59, 30, tzinfo=UTC)
    charges = billing.close(COMPUTE, start=start, end=start + timedelta(seconds=90), rate_micros=3_600_000,
                            billed_before_s=0, run_ends=True)
    assert [(c.period_start, c.period_end, c.seconds) for c in charges] == [
        (start, datetime(2026, 2, 1, tzinfo=UTC), 30),
        (datetime(2026, 2, 1, tzinfo=UTC), start + timedelta(seconds=90), 60),
    ]
    assert sum(c.amount_micros for c in charges) == 90_000


def test_december_rolls_into_the_next_year() -> None:
    assert billing.next_month(datetime(2026, 12, 5, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)


def test_amounts_are_exact_decimals_rounded_half_even_once() -> None:
    # 2.20 $/h for one second is 611.1 µ$; 0.0018 $/h for 1 s is 0.5 µ$ (→ 0) and for 3 s 1.5 µ$ (→ 2).
    assert billing.amount_micros(2_200_000, 1) == 611
    assert billing.amount_micros(1_800, 1) == 0
    assert billing.amount_micros(1_800, 3) == 2
    # no float anywhere: 0.333333 $/h for 3 hours is exactly 0.999999 $, not 0.9999989999…
    assert billing.amount_micros(333_333, 3 * 3600) == 999_999


@given(st.integers(min_value=0, max_value=50_000_000), st.lists(st.integers(min_value=1, max_value=7200),
                                                                 min_size=1, max_size=20))
def test_pieces_of_a_run_add_up_to_one_rounding_of_its_total(rate: int, lengths: list[int]) -> None:
    billed, total_amount, at = 0, 0, T0
    for length in lengths:
        for charge in billing.close(COMPUTE, start=at, end=at + timedelta(seconds=length), rate_micros=rate,
                                    billed_before_s=billed, run_ends=False):
            billed += charge.seconds
            total_amount += charge.amount_micros
        at += timedelta(seconds=length)
    assert billed == sum(lengths)
    assert total_amount == billing.amount_micros(rate, sum(lengths))


def test_a_compute_segment_that_starts_after_its_end_charges_nothing() -> None:
    assert billing.close(COMPUTE, start=T0 + timedelta(hours=1), end=T0, rate_micros=1_000_000,
                         billed_before_s=3600, run_ends=True) == []


def test_a_reservation_is_paid_in_full_for_its_hours() -> None:
    charge = billing.reservation(start=T0 + timedelta(microseconds=5), hours=3, rate_micros=2_200_000)
    assert (charge.kind, charge.seconds, charge.amount_micros) == (RESERVATION, 10_800, 6_600_000)
    assert charge.period_end - charge.period_start == timedelta(hours=3) and charge.period_start == T0


def test_thresholds_are_reported_once_each() -> None:
    assert billing.crossed(49, 100, 0) == []
    assert billing.crossed(50, 100, 0) == [50]
    assert billing.crossed(85, 100, 50) == [80]
    assert billing.crossed(100, 100, 0) == [50, 80, 100]
    assert billing.crossed(200, 100, 100) == []


@pytest.mark.parametrize("value", ["2026-13", "2026-1", "26-01", "abcd-ef", "2026/01", "", "9999-12", "1969-12"])
def test_bad_months_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        billing.parse_month(value)


def test_month_keys() -> None:
    assert billing.parse_month("2026-02") == datetime(2026, 2, 1, tzinfo=UTC)
    assert billing.month_key(T0) == "2026-03"
