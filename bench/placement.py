"""Placement throughput and POST→ready latency.

    python bench/placement.py [--hosts 5000] [--placements 2000] [--latency-samples 100]
    python bench/placement.py --compare REF [--rounds 3] [--hosts 1000] [--placements 1000]

1. Committed placements per second through the service layer on SQLite (and PostgreSQL when
   COLDPLATE_TEST_POSTGRES_URL is set), against a baseline measured in the same run: a bare
   committed transaction that writes one outbox row.
2. POST /v1/instances → `ready` latency with `coldplate server` and a `sim` agent as real
   processes, against the baseline of a GET /healthz round trip in the same run.
3. With `--compare REF`: SQLite placement throughput of this tree against the source of git
   revision REF (extracted with `git archive`, nothing checked out), in alternation, each run in
   a fresh process, so both see the same machine at nearly the same time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from coldplate import protocol
from coldplate.clock import SystemClock
from coldplate.domain import pricing
from coldplate.server import build_state
from coldplate.services import hostnodes, instances, join_tokens, outbox, projects
from coldplate.services.errors import NoCapacity
from coldplate.services.instances import InstanceRequest
from coldplate.state import AppState, Settings

GPUS = [("H100", 2_200_000), ("A100", 1_400_000), ("L40S", 900_000), ("RTX4090", 400_000), ("H200", 3_500_000)]
REGIONS = ["na", "eu", "apac"]


def seed(state: AppState, hosts: int) -> str:
    rng = random.Random(7)
    with state.tx() as session:
        projects.ensure_admin(session, clock=state.clock, key="cp_bench_admin")
        _, token = join_tokens.create(session, clock=state.clock, name="bench")
        project = projects.create_project(session, clock=state.clock, name="bench")
        for i in range(hosts):
            model, price = GPUS[i % len(GPUS)]
            price += rng.randrange(0, 400_000, 10_000)
            spec = protocol.HostInfo(
                name=f"sim-{i}", region=REGIONS[i % 3], gpu=protocol.Gpu(model=model, count=8), vcpus=128,
                memory_gb=1024, disk_gb=8000, port_range=(10000, 10999),
                prices=protocol.Prices(gpu_per_hour=pricing.format_micros(price),
                                       spot_gpu_per_hour=pricing.format_micros(price // 2)))
            hostnodes.register(session, clock=state.clock, spec=spec, join_token=token, credential=None)
        return project.id


def placements_per_second(state: AppState, project_id: str, n: int, times: list[float] | None = None) -> float:
    """Committed placements per second; each one's duration is appended to `times` when given."""
    rng = random.Random(11)
    start = time.perf_counter()
    for i in range(n):
        model, _ = GPUS[rng.randrange(len(GPUS))]
        req = InstanceRequest(name=f"b-{i}", gpu=model, gpu_count=rng.choice([1, 1, 2, 4, 8]),
                              region=rng.choice([None, *REGIONS]))
        t0 = time.perf_counter()
        try:
            with state.tx() as session:
                instances.create(session, clock=state.clock, project_id=project_id, req=req)
        except NoCapacity:
            pass
        if times is not None:
            times.append(time.perf_counter() - t0)
    return n / (time.perf_counter() - start)


def commits_per_second(state: AppState, project_id: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        with state.tx() as session:
            outbox.record(session, clock=state.clock, project_id=project_id, type="bench.noop")
    return n / (time.perf_counter() - start)


def throughput(label: str, url: str, hosts: int, n: int) -> tuple[str, float, float]:
    state = build_state(url, clock=SystemClock(), settings=Settings(run_loops=False))
    t0 = time.perf_counter()
    project_id = seed(state, hosts)
    print(f"  {label}: seeded {hosts} hosts in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    base = commits_per_second(state, project_id, n)
    rate = placements_per_second(state, project_id, n)
    state.sessions.kw["bind"].dispose()
    return label, rate, base


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def latency(samples: int) -> tuple[list[float], list[float]]:
    """POST → ready through a real server and a real sim agent; baseline: GET /healthz."""
    data_dir = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "COLDPLATE_ADMIN_KEY": "cp_bench_admin"}
    server = subprocess.Popen([sys.executable, "-m", "coldplate", "server", "--port", str(port),
                               "--data-dir", str(data_dir)], env=env, stdout=subprocess.DEVNULL)
    agent: subprocess.Popen[bytes] | None = None
    try:
        client = httpx.Client(base_url=url, headers={"Authorization": "Bearer cp_bench_admin"}, timeout=30)
        for _ in range(300):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        token = client.post("/v1/join-tokens", json={"name": "bench"}).json()["token"]
        fleet = data_dir / "fleet.yaml"
        fleet.write_text(
            "hosts:\n  - {name_prefix: lat, count: 4, region: eu, city: Frankfurt, country: DE, gpu: H100,"
            " gpu_count: 8, vcpus: 128, memory_gb: 1024, disk_gb: 8000, gpu_price: '2.20', spot_price: '1.10',"
            " start_delay_s: 0, failure_rate: 0, port_base: 30000}\n")
        agent = subprocess.Popen([sys.executable, "-m", "coldplate", "agent", "--server", url, "--runtime", "sim",
                                  "--fleet", str(fleet), "--data-dir", str(data_dir / "agent")],
                                 env={**os.environ, "COLDPLATE_JOIN_TOKEN": token}, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        for _ in range(300):
            if len(client.get("/v1/hostnodes").json()["data"]) == 4:
                break
            time.sleep(0.05)
        base, lat = [], []
        for i in range(samples):
            t0 = time.perf_counter()
            client.get("/healthz")
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            inst = client.post("/v1/instances", json={"name": f"lat-{i}", "gpu": "h100"}).json()
            ready = client.get(f"/v1/instances/{inst['id']}/wait", params={"timeout": 30})
            lat.append(time.perf_counter() - t0)
            assert ready.status_code == 200, ready.text
            client.post(f"/v1/instances/{inst['id']}/terminate", json={"force": True})
        return lat, base
    finally:
        for proc in (agent, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


def compare(ref: str, rounds: int, hosts: int, n: int) -> None:
    """This tree against `ref`, alternating, one fresh process per run (SQLite)."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", ref, "src"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        trees = {"this tree": str(root / "src"), ref: str(Path(tmp) / "src")}
        results: dict[str, list[float]] = {label: [] for label in trees}
        medians: dict[str, list[float]] = {label: [] for label in trees}
        for i in range(rounds):
            for label, src in (trees.items() if i % 2 == 0 else reversed(trees.items())):
                out = subprocess.run([sys.executable, __file__, "--one", "--hosts", str(hosts), "--placements",
                                      str(n)], env={**os.environ, "PYTHONPATH": f"{src}:{root}"}, check=True,
                                     capture_output=True, text=True).stdout
                rate, median_us = out.split()[-2:]
                results[label].append(float(rate))
                medians[label].append(float(median_us))
    print(f"\nPlacement on SQLite, this tree vs {ref} ({hosts} hosts, {n} placements, {rounds} runs each)")
    print(f"{'code':<14}{'median/s':>10}{'median µs':>11}  runs (placements/s)")
    for label, rates in results.items():
        print(f"{label[:14]:<14}{statistics.median(rates):>10.0f}{statistics.median(medians[label]):>11.0f}  "
              + " ".join(f"{r:.0f}" for r in rates))
    ratio = statistics.median(results["this tree"]) / statistics.median(results[ref])
    slower = statistics.median(medians["this tree"]) / statistics.median(medians[ref])
    print(f"{'ratio':<14}{ratio:>10.2f}{slower:>11.2f}")


def one(hosts: int, n: int) -> None:
    """A single SQLite run; prints placements/s and the median µs of one placement (for --compare).

    The median of single placements is the steadier figure on a shared machine: a burst of other
    work slows some placements, not the middle one."""
    with tempfile.TemporaryDirectory() as tmp:
        state = build_state(f"sqlite:///{tmp}/bench.db", clock=SystemClock(), settings=Settings(run_loops=False))
        project_id = seed(state, hosts)
        times: list[float] = []
        rate = placements_per_second(state, project_id, n, times)
        print(f"{rate:.1f} {statistics.median(times) * 1e6:.1f}")
        state.sessions.kw["bind"].dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--placements", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--compare", metavar="REF", help="compare placement throughput with git revision REF")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.hosts, args.placements)
        return
    if args.compare:
        compare(args.compare, args.rounds, args.hosts, args.placements)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(throughput("sqlite", f"sqlite:///{tmp}/bench.db", args.hosts, args.placements))
    pg = os.environ.get("COLDPLATE_TEST_POSTGRES_URL")
    if pg:
        name = f"cp_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(pg.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            rows.append(throughput("postgresql", f"{pg.rsplit('/', 1)[0]}/{name}", args.hosts, args.placements))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"\nPlacement throughput ({args.hosts} hosts, {args.placements} placements, one commit each)")
    print(f"{'database':<12}{'placements/s':>14}{'bare commits/s':>16}{'ratio':>8}")
    for label, rate, base in rows:
        print(f"{label:<12}{rate:>14.0f}{base:>16.0f}{rate / base:>8.2f}")
    if args.latency_samples:
        lat, base = latency(args.latency_samples)
        print(f"\nPOST /v1/instances → ready ({args.latency_samples} instances, sim agent, real HTTP)")
        print(f"{'measure':<22}{'p50 ms':>10}{'p99 ms':>10}")
        print(f"{'POST → ready':<22}{pct(lat, 50):>10.1f}{pct(lat, 99):>10.1f}")
        print(f"{'GET /healthz':<22}{pct(base, 50):>10.1f}{pct(base, 99):>10.1f}")
        print(f"{'ratio':<22}{pct(lat, 50) / pct(base, 50):>10.1f}{pct(lat, 99) / pct(base, 99):>10.1f}")


if __name__ == "__main__":
    main()
