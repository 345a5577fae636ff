"""The disks of terminated instances, kept for a retention period (default 7 days), then deleted.

A terminated instance's `/workspace` is not deleted at once: a user who terminated the wrong
instance can still have its data recovered by the host's operator. The book is a small JSON file
in the agent's data directory (`retained-workspaces.json`: instance id → deletion time, epoch
seconds), written atomically, so the schedule survives an agent restart. The agent records an
instance here before it deletes the instance, and purges what is due at every heartbeat.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_RETENTION_DAYS = 7.0
BOOK = "retained-workspaces.json"


class WorkspaceRetention:
    def __init__(self, data_dir: Path, *, days: float = DEFAULT_RETENTION_DAYS,
                 now: Callable[[], float] = time.time) -> None:
        self.path = data_dir / BOOK
        self.period_s = days * 86400
        self.now = now

    def _read(self) -> dict[str, float]:
        try:
            return {str(k): float(v) for k, v in json.loads(self.path.read_text()).items()}
        except FileNotFoundError:
            return {}

    def _write(self, book: dict[str, float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(book, sort_keys=True))
        os.replace(partial, self.path)

    def keep(self, instance_id: str) -> None:
        """Schedule the deletion; a second call (a retried terminate) keeps the first deadline."""
        book = self._read()
        book.setdefault(instance_id, self.now() + self.period_s)
        self._write(book)

    def due(self) -> list[str]:
        now = self.now()
        return sorted(i for i, at in self._read().items() if at <= now)

    def forget(self, instance_id: str) -> None:
        book = self._read()
        if book.pop(instance_id, None) is not None:
            self._write(book)

    def scheduled(self) -> dict[str, float]:
        return self._read()
