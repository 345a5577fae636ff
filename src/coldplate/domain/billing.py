"""Billing arithmetic, pure: open segments become ledger charges.

A segment is a stretch of time billed at one hourly rate (`compute` while ready or draining,
`storage` while stopped). Closing it (at a transition, or by the meter before an hour is up) yields
charges: one per calendar month it touches, times taken to the whole second. Amounts follow the
running total of the run: a piece costs round(rate × seconds_so_far) − round(rate × seconds_before),
so however often the meter closes a run, its pieces add up to exactly one rounding of its total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from coldplate.domain.pricing import round_micros

MINIMUM_RUN_S = 60  # a compute run (ready → stopped/terminated) costs at least this many seconds
SECONDS_PER_HOUR = 3600
COMPUTE, STORAGE, RESERVATION = "compute", "storage", "reservation"
THRESHOLDS = (50, 80, 100)  # instance budget alerts, in percent


@dataclass(frozen=True)
class Charge:
    kind: str
    period_start: datetime
    period_end: datetime
    seconds: int
    rate_micros: int  # per hour
    amount_micros: int


def whole_second(at: datetime) -> datetime:
    """Billing time is kept to the second (rounded down), so pieces and boundaries are whole seconds."""
    return at.replace(microsecond=0)


def amount_micros(rate_micros: int, seconds: int) -> int:
    """rate (micro-dollars per hour) × seconds, rounded once, half-even, in exact decimal arithmetic."""
    return round_micros(Decimal(rate_micros) * seconds / SECONDS_PER_HOUR)


def month_start(at: datetime) -> datetime:
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month(at: datetime) -> datetime:
    return datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)


def month_pieces(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at each month boundary; empty when end ≤ start."""
    pieces: list[tuple[datetime, datetime]] = []
    while start < end:
        cut = min(end, next_month(start))
        pieces.append((start, cut))
        start = cut
    return pieces


def close(kind: str, *, start: datetime, end: datetime, rate_micros: int, billed_before_s: int,
          run_ends: bool) -> list[Charge]:
    """The charges for [start, end) of a segment whose run has already billed `billed_before_s` seconds.

    With `run_ends` a compute run is topped up to MINIMUM_RUN_S (on its last piece, or on a zero-length
    piece at `end` when the run was shorter than a second). `start` after `end` (a compute segment that
    begins when a reservation ends) charges nothing."""
    start, end = whole_second(start), whole_second(end)
    pieces = month_pieces(start, end)
    seconds = [int((b - a).total_seconds()) for a, b in pieces]
    if run_ends and kind == COMPUTE:
        short = MINIMUM_RUN_S - billed_before_s - sum(seconds)
        if short > 0:
            if not pieces:
                pieces, seconds = [(end, end)], [0]
            seconds[-1] += short
    charges: list[Charge] = []
    billed = billed_before_s
    for (a, b), s in zip(pieces, seconds, strict=True):
        amount = amount_micros(rate_micros, billed + s) - amount_micros(rate_micros, billed)
        billed += s
        charges.append(Charge(kind, a, b, s, rate_micros, amount))
    return charges


def reservation(*, start: datetime, hours: int, rate_micros: int) -> Charge:
    """A reservation is paid up front, in full, for [start, start + hours)."""
    start = whole_second(start)
    return Charge(RESERVATION, start, start + timedelta(hours=hours), hours * SECONDS_PER_HOUR, rate_micros,
                  rate_micros * hours)


def crossed(cost_micros: int, limit_micros: int, already: int) -> list[int]:
    """The budget thresholds (percent) reached by `cost` and not yet announced (`already` is the last one)."""
    return [t for t in THRESHOLDS if t > already and cost_micros * 100 >= limit_micros * t]


def month_key(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def parse_month(value: str) -> datetime:
    """'YYYY-MM' → the first instant of that month; ValueError otherwise."""
    year, sep, month = value.partition("-")
    if not (sep and len(year) == 4 and len(month) == 2 and year.isdigit() and month.isdigit()
            and 1 <= int(month) <= 12 and 1970 <= int(year) <= 9998):
        raise ValueError(f"month must look like 2026-01, got {value!r}")
    return datetime(int(year), int(month), 1, tzinfo=UTC)
