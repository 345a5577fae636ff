"""What a real host has: GPUs through NVML, CPU, memory and disk through psutil.

Without an NVIDIA driver the host is GPU-less (`cpu` instances only) unless `--fake-gpus` names
a simulated inventory, which is reported as such (`simulated: true`)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInventory:
    model: str
    count: int
    memory_mb: int = 0
    uuids: list[str] = field(default_factory=list)
    driver_version: str | None = None
    simulated: bool = False


NO_GPUS = GpuInventory(model="cpu", count=0)


def nvml_gpus() -> GpuInventory | None:
    """The GPUs NVML sees, or None where there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, no device: all mean no GPUs here
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return None
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        name = pynvml.nvmlDeviceGetName(handles[0])
        memory = pynvml.nvmlDeviceGetMemoryInfo(handles[0]).total // 2**20
        uuids = [pynvml.nvmlDeviceGetUUID(h) for h in handles]
        driver = pynvml.nvmlSystemGetDriverVersion()
        as_text = [x.decode() if isinstance(x, bytes) else str(x) for x in (name, driver, *uuids)]
        return GpuInventory(model=as_text[0], count=count, memory_mb=int(memory), uuids=as_text[2:],
                            driver_version=as_text[1])
    finally:
        pynvml.nvmlShutdown()


def nvml_minor_numbers() -> list[int] | None:
    """Each GPU's device minor number (its /dev/nvidia<N>), by NVML index; None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver: no device nodes to choose from
        return None
    try:
        return [int(pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(i)))
                for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def parse_fake_gpus(text: str) -> GpuInventory:
    """`h100-80gb:8` → 8 simulated H100s."""
    model, sep, count = text.partition(":")
    if not sep or not model or not count.isdigit() or int(count) < 1:
        raise ValueError(f"--fake-gpus takes MODEL:COUNT, such as h100-80gb:8, not {text!r}")
    return GpuInventory(model=model, count=int(count), uuids=[f"GPU-fake-{i}" for i in range(int(count))],
                        simulated=True)


def gpus(fake: str | None) -> GpuInventory:
    if fake:
        return parse_fake_gpus(fake)
    found = nvml_gpus()
    if found is None:
        log.info("no NVIDIA GPUs found; this host takes cpu instances only")
        return NO_GPUS
    return found


@dataclass(frozen=True)
class HostResources:
    vcpus: int
    memory_gb: int
    disk_gb: int


def host_resources(data_dir: Path) -> HostResources:
    data_dir.mkdir(parents=True, exist_ok=True)
    return HostResources(vcpus=psutil.cpu_count() or 1, memory_gb=max(1, psutil.virtual_memory().total // 2**30),
                         disk_gb=max(1, shutil.disk_usage(data_dir).free // 2**30))


def nvml_usage(indices: list[int]) -> dict[str, float]:
    """GPU utilisation (mean over the instance's GPUs) and memory used (sum), through NVML."""
    if not indices:
        return {}
    import pynvml

    pynvml.nvmlInit()
    try:
        utils, memory = [], 0
        for index in indices:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            utils.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            memory += pynvml.nvmlDeviceGetMemoryInfo(handle).used
        return {"gpu_util_pct": round(sum(utils) / len(utils), 1), "gpu_memory_bytes": float(memory)}
    finally:
        pynvml.nvmlShutdown()
