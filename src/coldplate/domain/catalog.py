"""GPU types and regions, with the aliases users and NVML call them by."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuType:
    slug: str
    name: str
    vram_gb: int
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Region:
    slug: str
    name: str
    aliases: tuple[str, ...]


GPU_TYPES: tuple[GpuType, ...] = (
    GpuType("h200-141gb", "NVIDIA H200 141GB", 141,
            ("H200", "h200_141gb", "h200-sxm-141gb", "NVIDIA H200", "NVIDIA H200 141GB HBM3e")),
    GpuType("h100-80gb", "NVIDIA H100 80GB", 80,
            ("H100", "h100_80gb", "h100-sxm5-80gb", "h100-pcie-80gb", "NVIDIA H100 80GB HBM3",
             "NVIDIA H100 PCIe", "NVIDIA H100")),
    GpuType("a100-80gb", "NVIDIA A100 80GB", 80,
            ("A100", "a100_80gb", "a100-sxm4-80gb", "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe")),
    GpuType("l40s-48gb", "NVIDIA L40S", 48, ("L40S", "l40s", "l40s_48gb", "NVIDIA L40S")),
    GpuType("rtx4090-24gb", "NVIDIA GeForce RTX 4090", 24,
            ("RTX4090", "rtx-4090", "rtx_4090", "4090", "NVIDIA GeForce RTX 4090")),
    GpuType("cpu", "CPU only", 0, ("none", "CPU")),
)

REGIONS: tuple[Region, ...] = (
    Region("na", "North America", ("us", "usa", "america")),
    Region("eu", "Europe", ("europe",)),
    Region("apac", "Asia Pacific", ("asia",)),
)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


_GPU_INDEX: dict[str, GpuType] = {}
for _gpu in GPU_TYPES:
    for _name in (_gpu.slug, _gpu.name, *_gpu.aliases):
        _GPU_INDEX[_key(_name)] = _gpu
_REGION_INDEX: dict[str, Region] = {}
for _region in REGIONS:
    for _name in (_region.slug, _region.name, *_region.aliases):
        _REGION_INDEX[_key(_name)] = _region


def resolve_gpu(text: str) -> GpuType | None:
    return _GPU_INDEX.get(_key(text))


def resolve_region(text: str) -> Region | None:
    return _REGION_INDEX.get(_key(text))


def gpu_type(slug: str) -> GpuType:
    found = resolve_gpu(slug)
    if found is None:
        raise KeyError(slug)
    return found
