"""vCPU, memory and process-count limits for the process runtime, through cgroups.

Each instance gets `coldplate/<instance>` under each controller it can use (cgroup v1: `cpu`,
`memory`, `pids` hierarchies, as on these machines; v2: one unified directory), and the
sandbox's first process joins it before it execs bubblewrap, so everything inside is counted.
What the host cannot enforce (no cgroup mounted, or not writable) is reported on the hostnode
(`enforced_limits`) rather than pretended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
ROOT = Path("/sys/fs/cgroup")
PARENT = "coldplate"
PERIOD_US = 100_000
LIMIT_OF = {"cpu": "vcpus", "memory": "memory_gb", "pids": "pids"}


@dataclass(frozen=True)
class Limits:
    vcpus: float
    memory_bytes: int
    pids: int


class Cgroups:
    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.unified = (root / "cgroup.controllers").exists()
        self.controllers = self._usable()

    def _usable(self) -> list[str]:
        """The controllers under which this agent can make its own cgroups."""
        usable = []
        for controller in LIMIT_OF:
            base = self._base(controller)
            if self.unified and controller not in (self.root / "cgroup.controllers").read_text().split():
                continue
            try:
                base.mkdir(parents=True, exist_ok=True)
            except OSError:
                continue
            if os.access(base, os.W_OK):
                usable.append(controller)
        if self.unified and usable:
            with contextlib.suppress(OSError):  # let the children use them
                (self._base("cpu") / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in usable))
        return usable

    def _base(self, controller: str) -> Path:
        return self.root / PARENT if self.unified else self.root / controller / PARENT

    def enforced(self) -> list[str]:
        return sorted(LIMIT_OF[c] for c in self.controllers)

    def directories(self, instance_id: str) -> list[Path]:
        bases = {self._base(c) for c in self.controllers}
        return sorted(base / instance_id for base in bases)

    def create(self, instance_id: str, limits: Limits) -> list[Path]:
        """The instance's cgroups with its limits; returns the `cgroup.procs` files to join."""
        for controller in self.controllers:
            path = self._base(controller) / instance_id
            path.mkdir(exist_ok=True)
            for name, value in self._settings(controller, limits).items():
                (path / name).write_text(value)
        return [d / "cgroup.procs" for d in self.directories(instance_id)]

    def _settings(self, controller: str, limits: Limits) -> dict[str, str]:
        quota = int(limits.vcpus * PERIOD_US)
        if self.unified:
            return {"cpu": {"cpu.max": f"{quota} {PERIOD_US}"}, "memory": {"memory.max": str(limits.memory_bytes)},
                    "pids": {"pids.max": str(limits.pids)}}[controller]
        return {"cpu": {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": str(quota)},
                "memory": {"memory.limit_in_bytes": str(limits.memory_bytes)},
                "pids": {"pids.max": str(limits.pids)}}[controller]

    def remove(self, instance_id: str, *, attempts: int = 40) -> None:
        """Blocking (run it in a thread): killed processes leave their cgroup a moment after they die."""
        for path in self.directories(instance_id):
            for attempt in range(attempts):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still busy; at the end, the next stop or purge retries
                    if attempt == attempts - 1:
                        log.warning("cgroup not removed", extra={"instance_id": instance_id, "path": str(path)})
                    time.sleep(0.05)


def join_command(procs: list[Path]) -> list[str]:
    """A command prefix that joins these cgroups and execs the rest (exec and SSH sessions)."""
    if not procs:
        return []
    script = 'for p in ' + " ".join(f"'{p}'" for p in procs) + '; do echo $$ > "$p" || exit 125; done; exec "$@"'
    return ["/bin/sh", "-c", script, "cgroup-join"]


def joiner(procs: list[Path]) -> Callable[[], None]:
    """A preexec function: the new process joins these cgroups before it execs."""
    def join() -> None:
        for path in procs:
            path.write_text(str(os.getpid()))
    return join
