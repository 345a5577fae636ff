"""Soak of the lifecycle race suite: every pair of writers, many trials, invariants after each.

    python bench/races.py [--seconds 30] [--db sqlite,postgresql]

The same trials as tests/services/test_lifecycle_races.py (tests/races.py drives them, through the
app's HTTP API with real threads), round-robin over every pair and each of its starting states until
the time is up, per database (PostgreSQL when COLDPLATE_TEST_POSTGRES_URL is set). Prints a table of
trials and violations per race pair, then the first violations seen. Run from the repository root."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.races

from tests.pgdb import fresh_database  # noqa: E402
from tests.races import Racer, pairs, starts_for  # noqa: E402

from coldplate.api.app import create_app  # noqa: E402
from coldplate.clock import FakeClock  # noqa: E402
from coldplate.server import build_state  # noqa: E402
from coldplate.services import projects  # noqa: E402
from coldplate.state import Settings  # noqa: E402

ADMIN_KEY = "cp_bench_admin_key"


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/races.db"
        return
    yield from fresh_database(os.environ["COLDPLATE_TEST_POSTGRES_URL"], "cp_races")


def soak(kind: str, seconds: float) -> tuple[Counter[str], Counter[str], list[str]]:
    trials: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    examples: list[str] = []
    with database(kind) as url:
        clock = FakeClock()
        state = build_state(url, clock=clock, settings=Settings(run_loops=False))
        with state.tx() as session:
            projects.ensure_admin(session, clock=clock, key=ADMIN_KEY)
        with TestClient(create_app(state), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            project = client.post("/v1/projects", json={"name": "races"}).json()
            key = client.post(f"/v1/projects/{project['id']}/keys", json={"name": "races"}).json()["key"]
            racer = Racer(client, state, {"Authorization": f"Bearer {key}"})
            work = [(pair, start) for pair in pairs() for start in starts_for(pair, 99)]
            deadline = time.monotonic() + seconds
            for pair, start in itertools.cycle(work):
                if time.monotonic() > deadline:
                    break
                result = racer.trial(pair, start)
                label = "+".join(pair)
                trials[label] += 1
                violations[label] += len(result.violations)
                examples += [f"{kind} {label} from {start}: {v}" for v in result.violations[:2]]
        state.sessions.kw["bind"].dispose()
    return trials, violations, examples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30, help="per database")
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args()
    kinds = [k for k in args.db.split(",") if k == "sqlite" or os.environ.get("COLDPLATE_TEST_POSTGRES_URL")]
    table: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    examples: list[str] = []
    for kind in kinds:
        trials, violations, seen = soak(kind, args.seconds)
        for label in trials:
            table[label][kind] = (trials[label], violations[label])
        examples += seen
    header = "".join(f"{k + ' trials':>20}{'violations':>12}" for k in kinds)
    print(f"{'race pair':<28}{header}")
    for label in sorted(table):
        cells = "".join(f"{table[label].get(k, (0, 0))[0]:>20}{table[label].get(k, (0, 0))[1]:>12}" for k in kinds)
        print(f"{label:<28}{cells}")
    totals = "".join(f"{sum(table[lb].get(k, (0, 0))[0] for lb in table):>20}"
                     f"{sum(table[lb].get(k, (0, 0))[1] for lb in table):>12}" for k in kinds)
    print(f"{'all':<28}{totals}")
    for line in examples[:30]:
        print(line)


if __name__ == "__main__":
    main()
