"""GPU paths on a real NVIDIA GPU: NVML inventory, utilisation while a matrix product runs, idle
after it stops, and isolation by CUDA_VISIBLE_DEVICES. Skipped where NVML finds no GPU (CI never
has one); results from a machine with a GPU are recorded in docs/gpu-validation.md."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
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
from tests.gpu.workloads import MATMUL, VISIBLE

FOUND = inventory.nvml_gpus()
pytestmark = pytest.mark.skipif(FOUND is None, reason="no NVIDIA GPU (NVML found none)")

def needs_torch_cuda() -> str:
    """A Python with torch and CUDA that the process runtime's sandbox shows (it sees /usr and /opt,
    not a virtual environment elsewhere); skips without one."""
    candidates = [sys.executable] if sys.executable.startswith(("/usr/", "/opt/")) else []
    for python in [*candidates, "/usr/bin/python3", "/usr/local/bin/python3"]:
        probe = subprocess.run([python, "-c", "import torch; assert torch.cuda.is_available()"],
                               capture_output=True, timeout=120, check=False) if Path(python).exists() else None
        if probe is not None and probe.returncode == 0:
            return python
    pytest.skip("no Python with torch and CUDA under /usr or /opt, where the sandbox can run it")


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
                           port_range=(41000, 41100), fake_gpus=None, data_dir=tmp_path,
                           prices={"gpu_per_hour": "2.00", "spot_gpu_per_hour": "1.00"})
    assert (host.gpu.model, host.gpu.count, host.gpu.uuids, host.gpu.simulated) == (
        FOUND.model, FOUND.count, FOUND.uuids, False)


async def test_utilisation_while_a_matrix_product_runs_then_idle(tmp_path: Path) -> None:
    python = needs_torch_cuda()
    runtime = ProcessRuntime(data_dir=tmp_path)
    s = spec([python, "-c", MATMUL, "30"], [0])
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
    python = needs_torch_cuda()
    assert FOUND is not None
    index = FOUND.count - 1
    runtime = ProcessRuntime(data_dir=tmp_path, gpu_minors=inventory.nvml_minor_numbers())
    s = spec(["sh", "-c", f"{python} -c {shlex.quote(VISIBLE)} > seen.txt; sleep 60"], [index])
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


async def seen_from_inside(tmp_path: Path, gpu_indices: list[int], script: str) -> str:
    """What `script` prints inside a process-runtime instance given these GPUs."""
    runtime = ProcessRuntime(data_dir=tmp_path, gpu_minors=inventory.nvml_minor_numbers())
    s = spec(["sleep", "600"], gpu_indices)
    await runtime.start(s)
    try:
        done = await runtime.exec(s.instance_id, ["sh", "-c", script], timeout=120)
    finally:
        await runtime.delete(s.instance_id)
        await runtime.purge(s.instance_id)
    assert done.exit_code == 0, done
    return done.stdout


async def test_an_instance_without_a_gpu_has_no_gpu_device(tmp_path: Path) -> None:
    """Measured on an H100 host before issue 9: an instance given no GPU saw /dev/nvidia0,
    nvidiactl, nvidia-uvm and nvidia-caps, and torch counted 1 device."""
    listing = await seen_from_inside(tmp_path, [], "ls -1 /dev")
    assert not [name for name in listing.split() if name.startswith("nvidia")], listing
    python = needs_torch_cuda()
    count = await seen_from_inside(
        tmp_path, [], f"env -u CUDA_VISIBLE_DEVICES {python} -c 'import torch; print(torch.cuda.device_count())'")
    assert count.strip() == "0"


async def test_an_instance_given_gpu_k_sees_only_gpu_k(tmp_path: Path) -> None:
    assert FOUND is not None
    index = FOUND.count - 1
    minors = inventory.nvml_minor_numbers()
    assert minors is not None
    listing = (await seen_from_inside(tmp_path, [index], "ls -1 /dev")).split()
    gpus = sorted(name for name in listing if name.removeprefix("nvidia").isdigit())
    assert gpus == [f"nvidia{minors[index]}"]
    assert "nvidiactl" in listing and "nvidia-uvm" in listing
    python = needs_torch_cuda()
    seen = await seen_from_inside(tmp_path, [index], f"env -u CUDA_VISIBLE_DEVICES {python} -c {shlex.quote(VISIBLE)}")
    count, seen_uuid = seen.split()
    assert count == "1" and FOUND.uuids[index].removeprefix("GPU-") == seen_uuid.removeprefix("GPU-")
