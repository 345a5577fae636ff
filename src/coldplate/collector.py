"""Garbage collection for processes that hold thousands of requests open at once.

A control plane with 10,000 hosts holds 10,000 long-polls, and a sim fleet as many agents: about two
million objects that live for a minute each and then die by reference counting. CPython's automatic
full collection walks every tracked object whenever a quarter more have survived into the oldest
generation, which with this churn meant a 1.2-5 s pause of the whole process every few seconds
(measured at 10,000 hosts: 12-58 % of a core, and every latency's tail). These processes keep the
young generations' collections, turn the automatic full ones off, and run one every
FULL_COLLECTION_S instead: cyclic garbage that reaches the oldest generation waits that long."""

from __future__ import annotations

import asyncio
import gc

FULL_COLLECTION_S = 600.0
NEVER = 2**31 - 1  # a young-generation collection count the oldest generation's threshold never reaches


async def collect_rarely(interval_s: float = FULL_COLLECTION_S) -> None:
    """Run for the life of the process: full collections only every `interval_s`."""
    young, middle, oldest = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)
    try:
        while True:
            await asyncio.sleep(interval_s)
            gc.collect()
    finally:
        gc.set_threshold(young, middle, oldest)
