"""N-way races between every pair of lifecycle writers, on SQLite and PostgreSQL, with the
invariants (tests/invariants.py) checked after each trial. The driver is tests/races.py; a longer
soak of the same is bench/races.py."""

from __future__ import annotations

from collections import Counter

from fastapi.testclient import TestClient

from coldplate.state import AppState
from tests.conftest import auth
from tests.races import Racer, pairs, starts_for

PER_PAIR = 2  # starting states per pair: 78 pairs → 150-odd trials per database


def test_every_pair_of_writers_races_without_breaking_an_invariant(client: TestClient, state: AppState,
                                                                   project_key: str) -> None:
    racer = Racer(client, state, auth(project_key))
    failures: list[str] = []
    trials = 0
    seen: Counter[str] = Counter()
    for pair in pairs():
        for start in starts_for(pair, PER_PAIR):
            result = racer.trial(pair, start)
            trials += 1
            seen.update(o.result for o in result.outcomes)
            failures += [f"{'+'.join(pair)} from {start}: {v}" for v in result.violations]
    assert trials >= 150
    assert not failures, f"{len(failures)} violations in {trials} trials:\n" + "\n".join(failures[:40])
    # the races were real: moves won and lost against each other
    assert seen["ok"] > trials and seen["invalid_state"] > 0, seen
