"""The collector policy of servers and sim fleets: no automatic full collections, one every interval."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from coldplate.collector import NEVER, collect_rarely


def test_full_collections_run_on_the_interval_only_and_the_policy_ends_with_the_task() -> None:
    before = gc.get_threshold()
    full: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(1)

    async def main() -> None:
        task = asyncio.create_task(collect_rarely(0.2))
        await asyncio.sleep(0.05)
        assert gc.get_threshold() == (before[0], before[1], NEVER)
        gc.callbacks.append(seen)
        try:
            junk = [[[] for _ in range(50)] for _ in range(20_000)]  # many young collections, none full
            del junk
            assert full == []
            await asyncio.sleep(0.3)
            assert full, "no full collection after the interval"
        finally:
            gc.callbacks.remove(seen)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert gc.get_threshold() == before
