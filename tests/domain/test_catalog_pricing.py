from decimal import Decimal

import pytest

from coldplate.domain import catalog, pricing


@pytest.mark.parametrize("alias", ["H100", "h100_80gb", "h100-sxm5-80gb", "NVIDIA H100 80GB HBM3", "h100-80gb"])
def test_h100_aliases(alias: str) -> None:
    found = catalog.resolve_gpu(alias)
    assert found is not None and found.slug == "h100-80gb"


def test_catalog_has_required_types_and_regions() -> None:
    slugs = {g.slug for g in catalog.GPU_TYPES}
    assert {"h200-141gb", "h100-80gb", "a100-80gb", "l40s-48gb", "rtx4090-24gb", "cpu"} <= slugs
    assert catalog.resolve_region("us").slug == "na"  # type: ignore[union-attr]
    assert catalog.resolve_region("asia").slug == "apac"  # type: ignore[union-attr]
    assert catalog.resolve_region("mars") is None
    assert catalog.resolve_gpu("voodoo2") is None


def test_money_is_exact_and_rounds_half_even() -> None:
    assert pricing.to_micros("2.20") == 2_200_000
    assert pricing.format_micros(2_200_000) == "2.200000"
    assert pricing.round_micros(Decimal("0.5")) == 0
    assert pricing.round_micros(Decimal("1.5")) == 2
    assert pricing.to_micros("0.0000005") == 0
    assert pricing.to_micros("0.0000015") == 2
    for bad in ("-1", "abc", "NaN", "Infinity"):
        with pytest.raises(ValueError):
            pricing.to_micros(bad)


def test_instance_price() -> None:
    assert pricing.instance_price_micros(gpu_per_hour=2_000_000, gpu_count=2, vcpu_per_hour=10_000, vcpus=8,
                                         memory_gb_per_hour=1_000, memory_gb=64, disk_gb_per_hour=100,
                                         disk_gb=100) == 4_000_000 + 80_000 + 64_000 + 10_000
