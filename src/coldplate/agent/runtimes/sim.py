"""A simulated runtime: instances are entries in memory, with configurable start delay and failures."""

from __future__ import annotations

import asyncio
import random
import time

from coldplate.agent.runtimes.base import Assignment, ExecResult, ExitInfo, LogChunk, RuntimeFailure, Shell


class SimRuntime:
    sandbox = "simulated"

    def enforced_limits(self) -> list[str]:
        return []  # nothing runs

    def __init__(self, *, start_delay_s: float = 0.0, failure_rate: float = 0.0,
                 rng: random.Random | None = None) -> None:
        self.start_delay_s = start_delay_s
        self.failure_rate = failure_rate
        self.rng = rng or random.Random()
        self.instances: dict[str, str] = {}  # id → "running" | "exited"
        self.started: dict[str, float] = {}
        self.utilisation: dict[str, float] = {}

    async def start(self, spec: Assignment) -> None:
        if self.start_delay_s:
            await asyncio.sleep(self.start_delay_s)
        if self.failure_rate and self.rng.random() < self.failure_rate:
            raise RuntimeFailure("simulated start failure")
        self.instances[spec.instance_id] = "running"
        self.started[spec.instance_id] = time.monotonic()

    async def stop(self, instance_id: str, *, grace_seconds: float, force: bool) -> ExitInfo:
        was_running = self.instances.get(instance_id) == "running"
        self.instances[instance_id] = "exited"
        if not was_running:
            return ExitInfo(None, None)
        if force:
            return ExitInfo(137, "killed by signal 9 (SIGKILL)")
        return ExitInfo(0, "exited with code 0")

    async def delete(self, instance_id: str) -> None:
        self.instances.pop(instance_id, None)

    async def purge(self, instance_id: str) -> None:
        return None  # simulated instances have no disk

    async def recover(self) -> None:
        return None  # simulated instances end with the agent's process

    async def running(self) -> set[str]:
        return {i for i, state in self.instances.items() if state == "running"}

    async def exec(self, instance_id: str, cmd: list[str], *, timeout: float) -> ExecResult:
        if self.instances.get(instance_id) != "running":
            return ExecResult(126, "", "the instance is not running")
        return ExecResult(0, f"simulated: {' '.join(cmd)}\n", "")

    async def logs(self, instance_id: str, *, tail: int | None, cursor: str | None) -> LogChunk:
        return LogChunk(lines=[] if cursor else [f"simulated instance {instance_id}"], cursor="end")

    async def sample(self, instance_id: str) -> dict[str, float]:
        """Synthetic figures: GPU utilisation wanders between 0 and 100 %."""
        previous = self.utilisation.get(instance_id, 50.0)
        current = min(100.0, max(0.0, previous + self.rng.uniform(-20, 20)))
        self.utilisation[instance_id] = current
        return {"gpu_util_pct": round(current, 1), "cpu_pct": round(current / 2, 1), "memory_bytes": 2**30,
                "uptime_s": round(time.monotonic() - self.started.get(instance_id, time.monotonic()), 1)}

    def shell(self, instance_id: str, command: str | None, *, tty: bool) -> Shell | None:
        return None  # simulated instances have nothing to log into

    async def connect(self, instance_id: str, host: str, port: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise OSError("a simulated instance has no network")
