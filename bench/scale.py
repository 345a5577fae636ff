"""One control plane, thousands of simulated hosts: every figure of issue 11 at each fleet size.

    python bench/scale.py --quick                      # 1,000 hosts, SQLite: about a minute
    python bench/scale.py                              # 1,000 / 3,000 / 10,000 on SQLite and PostgreSQL
    python bench/scale.py --sizes 3000 --databases postgresql

Everything runs as real processes: `coldplate server` (one on SQLite; two replicas on one
PostgreSQL database, each agent shard talking to one of them, creates sent to the first) and
`coldplate agent --runtime sim --hosts N --shard i/n` fleet processes (sim boot delay 0). For
each size, once every host is online:

- server CPU (cores, summed over replicas) and RSS over a steady-state window;
- POST /v1/instances → `ready` (`/wait`) p50/p99 over `--creates` sequential creates;
- 100,000 instances are then inserted directly in bulk (90,000 terminated, 10,000 stopped and
  still on their hosts; on PostgreSQL followed by the ANALYZE autovacuum would run), and
  GET /v1/instances (a page of 50, a project key) and GET /v1/offers p50/p99 are measured over
  200 calls each;
- the servers are restarted: the time from the new processes' start until every host has
  heartbeated again.

PostgreSQL comes from COLDPLATE_TEST_POSTGRES_URL (a fresh database per run).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import Engine, create_engine, func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.pgdb

from tests.pgdb import fresh_database  # noqa: E402

from coldplate.db.tables import Hostnode, Instance  # noqa: E402
from coldplate.services.instances import ALL_NONE  # noqa: E402

ADMIN = "cp_bench_admin"
MAX_FAILED_CREATES = 5
BULK_ROWS = 2000
STOP_WAIT_S = 60
FLEET = """hosts:
  - {name_prefix: na, count: 1, region: na, gpu: H100, gpu_count: 8, vcpus: 192, memory_gb: 2048, disk_gb: 16000,
     gpu_price: "2.49", spot_price: "1.25", start_delay_s: 0, failure_rate: 0, port_base: 30000}
  - {name_prefix: eu, count: 1, region: eu, gpu: H100, gpu_count: 8, vcpus: 192, memory_gb: 2048, disk_gb: 16000,
     gpu_price: "2.29", spot_price: "1.15", start_delay_s: 0, failure_rate: 0, port_base: 30000}
  - {name_prefix: apac, count: 1, region: apac, gpu: A100, gpu_count: 8, vcpus: 128, memory_gb: 1024,
     disk_gb: 8000, gpu_price: "1.69", spot_price: "0.85", start_delay_s: 0, failure_rate: 0, port_base: 30000}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else values[0]


@dataclass
class Row:
    database: str
    hosts: int
    online_s: float = 0.0
    cpu_cores: float = 0.0
    rss_mb: float = 0.0
    fleet_cpu_cores: float = 0.0
    ready_p50: float = 0.0
    ready_p99: float = 0.0
    list_p50: float = 0.0
    list_p99: float = 0.0
    offers_p50: float = 0.0
    offers_p99: float = 0.0
    restart_s: float = 0.0
    failed: int = 0


class Plane:
    """The servers (one, or two replicas) and the fleet processes of one run."""

    def __init__(self, db_url: str, data_dir: Path, replicas: int) -> None:
        self.db_url, self.data_dir = db_url, data_dir
        self.ports = [_free_port() for _ in range(replicas)]
        self.servers: list[subprocess.Popen[bytes]] = []
        self.fleets: list[subprocess.Popen[bytes]] = []
        self.log = (data_dir / "processes.log").open("ab")

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def start_servers(self) -> float:
        started = time.time()
        env = {**os.environ, "COLDPLATE_ADMIN_KEY": ADMIN, "COLDPLATE_DATABASE_URL": self.db_url}
        self.servers = [subprocess.Popen([sys.executable, "-m", "coldplate", "server", "--port", str(port),
                                          "--data-dir", str(self.data_dir)], env=env, stdout=self.log,
                                         stderr=self.log) for port in self.ports]
        for url in self.urls:
            _until(lambda u=url: _healthy(u), 60, "server start")
        return started

    def stop_servers(self) -> None:
        for proc in self.servers:
            proc.send_signal(signal.SIGTERM)
        for proc in self.servers:
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                print(f"  a server took over {STOP_WAIT_S}s to stop: killed", file=sys.stderr, flush=True)
                proc.kill()
                proc.wait()

    def start_fleet(self, hosts: int, shards: int, fleet_file: Path, token: str) -> None:
        env = {**os.environ, "COLDPLATE_JOIN_TOKEN": token}
        for i in range(shards):  # each shard keeps its hosts' agent tokens in a data directory of its own
            self.fleets.append(subprocess.Popen(
                [sys.executable, "-m", "coldplate", "agent", "--server", self.urls[i % len(self.urls)],
                 "--runtime", "sim", "--fleet", str(fleet_file), "--hosts", str(hosts), "--shard", f"{i}/{shards}",
                 "--data-dir", str(self.data_dir / f"fleet-{i}")], env=env, stdout=self.log, stderr=self.log))

    def close(self) -> None:
        for proc in [*self.fleets, *self.servers]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.fleets, *self.servers]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _until(predicate: Any, timeout: float, what: str, poll: float = 0.2) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - start


def _cpu(procs: list[subprocess.Popen[bytes]], seconds: float) -> tuple[float, float]:
    """Cores used (summed) over `seconds`, and RSS in MB (summed) at the end."""
    ps = [psutil.Process(p.pid) for p in procs]
    before = [p.cpu_times() for p in ps]
    time.sleep(seconds)
    after = [p.cpu_times() for p in ps]
    used = sum((a.user + a.system) - (b.user + b.system) for a, b in zip(after, before, strict=True))
    return used / seconds, sum(p.memory_info().rss for p in ps) / 2**20


def _online(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Hostnode).where(Hostnode.status == "online")) or 0)


def _seen_since(engine: Engine, since: datetime) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Hostnode)
                               .where(Hostnode.last_heartbeat_at >= since)) or 0)


def bulk_instances(engine: Engine, project_id: str, total: int, live: int) -> None:
    """`total` instances straight into the table: `live` stopped on hosts, the rest terminated; in
    transactions of BULK_ROWS, so that the running server's writers get the database in between."""
    with engine.connect() as conn:
        host_ids = list(conn.scalars(select(Hostnode.id).order_by(Hostnode.id)))
    now = datetime.now(UTC)
    for first in range(0, total, BULK_ROWS):
        rows: list[dict[str, Any]] = []
        for i in range(first, min(first + BULK_ROWS, total)):
            alive = i < live
            created = now - timedelta(days=30) + timedelta(seconds=i * 20)
            rows.append(dict(
                ALL_NONE, id=f"inst_bulk{i:08d}", project_id=project_id, name=f"bulk-{i}",
                status="stopped" if alive else "terminated", desired="stopped" if alive else "terminated",
                restart_pending=False, gpu_type="h100-80gb", gpu_count=1, gpu_indices=[], vcpus=2, memory_gb=4,
                disk_gb=20, hostnode_id=host_ids[i % len(host_ids)] if alive else None, region="eu",
                image="busybox", env={}, ssh_keys=[], ports=[], volumes=[], labels={}, spot=False,
                price_micros=2_290_000, grace_seconds=60, force=False, created_at=created, updated_at=created,
                terminated_at=None if alive else created, budget_alerted=0, seg_no=0, seg_billed_s=0,
                billed_micros=0, version=1))
        with engine.begin() as conn:
            conn.execute(insert(Instance), rows)
        time.sleep(0.05)
    if engine.dialect.name == "postgresql":  # what autovacuum would do soon after such a load
        with engine.connect() as conn:
            conn.execute(text("ANALYZE instances"))
            conn.commit()


def _timed(client: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = client.request(method, path, **kwargs)
    return time.perf_counter() - start, response


def run(database: str, db_url: str, hosts: int, creates: int, steady_s: float) -> Row:
    row = Row(database, hosts)
    data_dir = Path(tempfile.mkdtemp(prefix="cp-scale-"))
    replicas = 2 if database == "postgresql" else 1
    plane = Plane(db_url, data_dir, replicas)
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        plane.start_servers()
        admin = httpx.Client(base_url=plane.urls[0], headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
        token = admin.post("/v1/join-tokens", json={"name": "bench"}).json()["token"]
        project = admin.post("/v1/projects", json={"name": "bench"}).json()
        key = admin.post(f"/v1/projects/{project['id']}/keys", json={"name": "bench"}).json()
        user = httpx.Client(base_url=plane.urls[0], headers={"Authorization": f"Bearer {key['key']}"}, timeout=60)
        fleet_file = data_dir / "fleet.yaml"
        fleet_file.write_text(FLEET)
        shards = max(replicas, (hosts + 4999) // 5000)
        t0 = time.monotonic()
        plane.start_fleet(hosts, shards, fleet_file, token)
        _until(lambda: _online(engine) >= hosts, 600, f"{hosts} hosts online", poll=0.5)
        row.online_s = time.monotonic() - t0
        print(f"  {database} {hosts}: all online in {row.online_s:.1f}s", file=sys.stderr, flush=True)
        time.sleep(min(10.0, steady_s))  # registration's tail
        row.cpu_cores, row.rss_mb = _cpu(plane.servers, steady_s)
        row.fleet_cpu_cores, _ = _cpu(plane.fleets, 2.0)
        print(f"  steady state: server {row.cpu_cores:.2f} cores, {row.rss_mb:.0f} MB; fleet {row.fleet_cpu_cores:.2f}"
              " cores", file=sys.stderr, flush=True)
        latencies = []
        for i in range(creates):
            if row.failed >= MAX_FAILED_CREATES:  # the target ("nothing failed") is missed: say so, move on
                break
            try:
                elapsed, created = _timed(user, "POST", "/v1/instances", json={"name": f"c{i}", "gpu": "h100"})
                waited, ready = _timed(user, "GET", f"/v1/instances/{created.json()['id']}/wait",
                                       params={"timeout": 30}) if created.status_code == 201 else (0.0, created)
            except httpx.HTTPError as exc:
                print(f"  create {i}: {exc!r}", file=sys.stderr, flush=True)
                row.failed += 1
                continue
            if ready.status_code != 200:
                row.failed += 1
                continue
            latencies.append(elapsed + waited)
        row.ready_p50, row.ready_p99 = (pct(latencies, 50), pct(latencies, 99)) if latencies else (0.0, 0.0)
        print(f"  POST -> ready: p50 {row.ready_p50:.1f} ms, p99 {row.ready_p99:.0f} ms over {len(latencies)};"
              f" failed {row.failed}", file=sys.stderr, flush=True)
        bulk_instances(engine, project["id"], 100_000, 10_000)
        lists, offers = [], []
        for _ in range(200):
            elapsed, page = _timed(user, "GET", "/v1/instances", params={"limit": 50})
            row.failed += page.status_code != 200
            lists.append(elapsed)
            elapsed, found = _timed(user, "GET", "/v1/offers", params={"gpu": "h100", "gpu_count": 1, "limit": 50})
            row.failed += found.status_code != 200
            offers.append(elapsed)
        row.list_p50, row.list_p99 = pct(lists, 50), pct(lists, 99)
        row.offers_p50, row.offers_p99 = pct(offers, 50), pct(offers, 99)
        print(f"  list p50 {row.list_p50:.1f} p99 {row.list_p99:.0f} ms; offers p50 {row.offers_p50:.1f}"
              f" p99 {row.offers_p99:.0f} ms", file=sys.stderr, flush=True)
        plane.stop_servers()
        restarted_at = datetime.now(UTC)
        started = time.monotonic()
        plane.start_servers()
        _until(lambda: _seen_since(engine, restarted_at) >= hosts, 600, "every host seen again", poll=0.5)
        row.restart_s = time.monotonic() - started
        print(f"  every host seen again {row.restart_s:.1f}s after the restart", file=sys.stderr, flush=True)
        return row
    finally:
        plane.close()
        engine.dispose()


@contextmanager
def database_url(database: str) -> Iterator[str]:
    if database == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/coldplate.db"
        return
    pg = os.environ.get("COLDPLATE_TEST_POSTGRES_URL")
    if not pg:
        raise SystemExit("set COLDPLATE_TEST_POSTGRES_URL for --databases postgresql")
    yield from fresh_database(pg, "cp_scale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 hosts on SQLite, 50 creates")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of the steady-state CPU window")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.databases, args.creates, args.steady = [1000], ["sqlite"], 50, 10.0
    rows = []
    for database in args.databases:
        for hosts in args.sizes:
            with database_url(database) as url:
                rows.append(run(database, url, hosts, args.creates, args.steady))
    print(f"\n{'database':<11}{'hosts':>6}{'online s':>9}{'srv cores':>10}{'srv RSS MB':>11}{'fleet cores':>12}"
          f"{'ready p50':>10}{'p99':>7}{'list p50':>9}{'p99':>7}{'offers p50':>11}{'p99':>7}{'restart s':>10}"
          f"{'failed':>7}")
    for r in rows:
        print(f"{r.database:<11}{r.hosts:>6}{r.online_s:>9.1f}{r.cpu_cores:>10.2f}{r.rss_mb:>11.0f}"
              f"{r.fleet_cpu_cores:>12.2f}{r.ready_p50:>10.1f}{r.ready_p99:>7.0f}{r.list_p50:>9.1f}"
              f"{r.list_p99:>7.0f}{r.offers_p50:>11.1f}{r.offers_p99:>7.0f}{r.restart_s:>10.1f}{r.failed:>7}")
    print("latencies in ms; cores: CPU seconds per second over the steady-state window")


if __name__ == "__main__":
    main()
