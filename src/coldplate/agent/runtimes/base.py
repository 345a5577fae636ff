"""The runtime interface every runtime implements; the assignment it is given is the protocol's."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from coldplate.protocol import Assignment

T = TypeVar("T")

START_CHECK_S = 0.5  # a workload that dies this soon after start failed to start
BOOT_TIMEOUT_S = 1800.0  # how long a first boot's cloud-init may take
BOOT_POLL_S = 0.25
STATE_DIR = "/workspace/.coldplate"  # where the instance's own coldplate state lives, on its disk

__all__ = ["Assignment", "ExecResult", "ExitInfo", "LogChunk", "Runtime", "RuntimeFailure", "Shell"]


@dataclass(frozen=True)
class ExitInfo:
    exit_code: int | None
    exit_message: str | None


def exit_message(code: int | None) -> str | None:
    """`137` → "killed by signal 9 (SIGKILL)"; `3` → "exited with code 3"."""
    if code is None:
        return None
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        sig = signal.Signals(code - 128)
        return f"killed by signal {sig.value} ({sig.name})"
    return f"exited with code {code}"


def gpu_env(indices: list[int], *, isolated: bool = False) -> dict[str, str]:
    """What CUDA is told. `isolated`: the instance holds only its own GPUs' device nodes, which
    CUDA numbers from 0 (as in a container with the NVIDIA runtime); else the host's indices."""
    visible = ",".join(str(i) for i in (range(len(indices)) if isolated else indices))
    return {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible or "void"}


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class LogChunk:
    lines: list[str]
    cursor: str  # where the next read continues; opaque to everyone but the runtime


@dataclass(frozen=True)
class Shell:
    argv: list[str]
    env: dict[str, str] | None = None  # None: the agent's own environment
    cwd: str | None = None


class RuntimeFailure(Exception):
    """The instance could not be started; the message is shown to the user as `failure_reason`."""


class Runtime(Protocol):
    @property
    def sandbox(self) -> str:
        """What isolates the workloads: bubblewrap, docker, none (asked for), simulated."""

    def enforced_limits(self) -> list[str]:
        """Which of an instance's limits (vcpus, memory_gb, pids, disk_gb) this host holds it to."""

    async def start(self, spec: Assignment) -> None:
        """Create (first time) or start again, and return once the workload runs."""

    async def stop(self, instance_id: str, *, grace_seconds: float, force: bool) -> ExitInfo:
        """SIGTERM, wait `grace_seconds`, SIGKILL; keeps the instance's disk."""

    async def delete(self, instance_id: str) -> None:
        """Remove the instance; its disk (`/workspace`) stays until `purge`."""

    async def purge(self, instance_id: str) -> None:
        """Delete the disk of a deleted instance (at the end of its retention period)."""

    async def running(self) -> set[str]:
        """Ids of the instances whose workload runs now."""

    async def recover(self) -> None:
        """At agent start: take back the workloads that ran on while no agent was there."""

    async def exec(self, instance_id: str, cmd: list[str], *, timeout: float) -> ExecResult:
        """Run a command inside the instance; exit code 124 when it ran past `timeout`."""

    async def logs(self, instance_id: str, *, tail: int | None, cursor: str | None) -> LogChunk:
        """The last `tail` lines, or everything after `cursor`."""

    async def sample(self, instance_id: str) -> dict[str, float]:
        """CPU, memory, disk, network and uptime of a running instance (GPU figures come from NVML)."""

    def shell(self, instance_id: str, command: str | None, *, tty: bool) -> Shell | None:
        """How to run `command` (None: a login shell) inside the instance from the host, for SSH."""

    async def connect(self, instance_id: str, host: str, port: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to host:port as the instance itself would make it (SSH forwards):
        from inside its network, never from the host's. OSError where it cannot be made."""


def exited_during_start(what: str, code: int | None, output: str) -> RuntimeFailure:
    """The failure a user reads when the workload died right after starting."""
    return RuntimeFailure(f"the {what} exited during start ({exit_message(code)})"
                          + (f"; last output: {output}" if output else ""))


async def launched(launch: Awaitable[T]) -> T:
    """Run `launch` to its end even if the caller is cancelled meanwhile (then the cancellation takes
    effect): a workload whose launch has begun must be where the stop that cancelled its start finds
    it. Cancelled mid-launch, a sandbox or container ran on, unknown, on GPUs the server had freed."""
    task = asyncio.ensure_future(launch)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # seen: the start ends cancelled whatever the launch's outcome
        raise


async def await_start(spec: Assignment, *, exited: Callable[[], Awaitable[RuntimeFailure | None]],
                      booted: Callable[[], Awaitable[bool]]) -> None:
    """Return once the workload has run for START_CHECK_S and, with cloud_init, finished its first boot.

    `exited` gives the failure to raise when the workload (or its boot script) is no longer running.
    """
    await asyncio.sleep(START_CHECK_S)
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while True:
        failure = await exited()
        if failure is not None:
            raise failure
        if not spec.cloud_init:
            return
        if await booted():
            break
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"cloud-init did not finish within {BOOT_TIMEOUT_S / 60:g} minutes")
        await asyncio.sleep(BOOT_POLL_S)
    await asyncio.sleep(START_CHECK_S)  # the workload itself, exec'd by the boot script, must live too
    failure = await exited()
    if failure is not None:
        raise failure


def directory_bytes(path: str) -> int:
    """Bytes used under `path` (a workspace or a volume), not following links."""
    import os

    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
