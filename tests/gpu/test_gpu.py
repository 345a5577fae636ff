"""GPU paths on a real NVIDIA GPU: NVML inventory, utilisation while a matrix product runs, idle
after it stops, and isolation by CUDA_VISIBLE_DEVICES. Skipped where NVML finds no GPU (CI never
has one); results from a machine with a GPU are recorded in docs/gpu-validation.md."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from coldplate.agent import inventory
from coldplate.agent.local import local_host_spec
from coldplate.agent.runtimes.base import Assignment
from coldplate.agent.runtimes.process import ProcessRuntime
from coldplate.domain import catalog

FOUND = inventory.nvml_gpus()
pytestmark = pytest.mark.skipif(FOUND is None, reason="no NVIDIA GPU (NVML found none)")

MATMUL = """
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda")
end = time.time() + float(sys.argv[1])
while time.time() < end:
    b = a @ a
    torch.cuda.synchronize()
"""
VISIBLE = "import torch; p = torch.cuda.get_device_properties(0); print(torch.cuda.device_count(), p.uuid)"


def needs_torch_cuda() -> None:
    try:
        import torch
    except ImportError:
        pytest.skip("the matrix product needs torch with CUDA")
    if not torch.cuda.is_available():
        pytest.skip("torch is installed without CUDA")


def spec(cmd: list[str], gpu_indices: list[int]) -> Assignment:
    return Assignment(instance_id=f"inst_g{uuid.uuid4().hex[:10]}", name="g", desired="running",
                      status="provisioning", image="host", cmd=cmd, gpu_indices=gpu_indices)


def test_nvml_inventory(tmp_path: Path) -> None:
    assert FOUND is not None
    gpu = catalog.resolve_gpu(FOUND.model)
    assert gpu is not None, f"{FOUND.model!r} does not map to a catalog GPU type"
    assert FOUND.count >= 1 and len(FOUND.uuids) == FOUND.count
    assert all(u.startswith("GPU-") for u in FOUND.uuids)
    assert FOUND.memory_mb > 1000 and FOUND.driver_version and not FOUND.simulated
    host = local_host_spec(name="gpu-host", region="eu", city="", country="", address="127.0.0.1",
                           port_range=(41000, 41100), fake_gpus=None, data_dir=tmp_path, prices={})
    assert (host.gpu.count, host.gpu.simulated) == (FOUND.count, False)


async def test_utilisation_while_a_matrix_product_runs_then_idle(tmp_path: Path) -> None:
    needs_torch_cuda()
    runtime = ProcessRuntime(data_dir=tmp_path)
    s = spec([sys.executable, "-c", MATMUL, "30"], [0])
    await runtime.start(s)
    try:
        busy = await poll(lambda u: u >= 50, timeout=30)
        assert busy >= 50
    finally:
        await runtime.stop(s.instance_id, grace_seconds=0, force=True)
    idle = await poll(lambda u: u <= 5, timeout=30)  # what idle detection reads once the work stops
    assert idle <= 5


async def poll(done: Callable[[float], bool], *, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    value = -1.0
    while time.monotonic() < deadline:
        value = inventory.nvml_usage([0])["gpu_util_pct"]
        if done(value):
            return value
        await asyncio.sleep(0.5)
    return value


async def test_cuda_visible_devices_isolates_the_allocated_gpu(tmp_path: Path) -> None:
    needs_torch_cuda()
    assert FOUND is not None
    index = FOUND.count - 1
    runtime = ProcessRuntime(data_dir=tmp_path)
    s = spec(["sh", "-c", f"{sys.executable} -c '{VISIBLE}' > seen.txt; sleep 60"], [index])
    await runtime.start(s)
    try:
        path = runtime.workspace(s.instance_id) / "seen.txt"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (path.exists() and path.read_text().strip()):
            await asyncio.sleep(0.5)
        count, seen_uuid = path.read_text().split()
    finally:
        await runtime.stop(s.instance_id, grace_seconds=0, force=True)
    assert count == "1"
    assert FOUND.uuids[index].removeprefix("GPU-") == seen_uuid.removeprefix("GPU-")
