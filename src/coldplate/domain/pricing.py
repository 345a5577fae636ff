"""Money: integer micro-dollars everywhere, one rounding rule (half-even), decimal strings in JSON."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

MICROS_PER_DOLLAR = 1_000_000


def to_micros(value: str | Decimal | int) -> int:
    """Parse a dollar amount; raises ValueError for anything that is not a finite decimal ≥ 0."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not a non-negative amount: {value!r}")
    return round_micros(amount * MICROS_PER_DOLLAR)


def round_micros(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def format_micros(micros: int) -> str:
    return f"{Decimal(micros) / MICROS_PER_DOLLAR:.6f}"


def instance_price_micros(
    *, gpu_per_hour: int, gpu_count: int, vcpu_per_hour: int, vcpus: int,
    memory_gb_per_hour: int, memory_gb: int, disk_gb_per_hour: int, disk_gb: int,
) -> int:
    """Hourly price of an instance, locked at placement."""
    return (gpu_per_hour * gpu_count + vcpu_per_hour * vcpus
            + memory_gb_per_hour * memory_gb + disk_gb_per_hour * disk_gb)
