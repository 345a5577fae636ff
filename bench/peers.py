"""coldplate against the dstack server, measured in one run on this machine.

    python bench/peers.py [--calls 200] [--skip-dstack] [--compare REF]

`--compare REF` also measures coldplate as it was at git revision REF (its `src/` extracted with
`git archive`, nothing checked out), in the same run: the cost of a change on the same machine.

For each server, started fresh on an empty database: cold start (spawn → first authenticated
list-instances answer), RSS of its process tree after start, list-instances latency p50/p99 over
sequential calls, and requests/s with 100 list calls in flight at once. dstack is installed on
first use into ~/.cache/coldplate-bench/dstack-venv (`pip install "dstack[server]"`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

VENV = Path.home() / ".cache" / "coldplate-bench" / "dstack-venv"
TOKEN = "cp_bench_admin"
DSTACK_TOKEN = "6b4e3d0e-6a5f-4e0c-9b1a-bench0000000"


@dataclass
class Target:
    name: str
    command: list[str]
    env: dict[str, str]
    list_call: Callable[[str], httpx.Request]


@dataclass
class Result:
    cold_start_s: float
    rss_mb: float
    p50_ms: float
    p99_ms: float
    concurrent_rps: float
    concurrent_failed: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss_mb(pid: int) -> float:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
        todo += children.get(current, [])
    return total_kb / 1024


def measure(target: Target, calls: int) -> Result:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = subprocess.Popen([c.replace("{port}", str(port)) for c in target.command], env=target.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with httpx.Client(timeout=10) as client:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{target.name} exited with {proc.returncode} during start")
                try:
                    if client.send(target.list_call(base)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{target.name} did not answer within 120 s")
                time.sleep(0.05)
            cold = time.perf_counter() - started
            time.sleep(1.0)  # let start-up work settle before reading memory
            rss = tree_rss_mb(proc.pid)
            latencies = []
            for _ in range(calls):
                t0 = time.perf_counter()
                response = client.send(target.list_call(base))
                latencies.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, response.text
        rps, failed = wrk(target, base) if shutil.which("wrk") else asyncio.run(concurrent(target, base))
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        return Result(cold, rss, q[49], q[98], rps, failed)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wrk(target: Target, base: str, connections: int = 100, seconds: int = 10) -> tuple[float, int]:
    """`wrk` (Debian package) keeps 100 connections busy; a Python load generator saturates first."""
    request = target.list_call(base)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
    lines = [f'wrk.method = "{request.method}"'] + [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if request.content:
        lines.append(f"wrk.body = '{request.content.decode()}'")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, str(request.url)],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in errors.groups()) if errors else 0)
    return rps, failed


async def concurrent(target: Target, base: str, in_flight: int = 100, rounds: int = 5) -> tuple[float, int]:
    """Successful answers per second with `in_flight` calls at once, and how many calls failed."""
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    ok = 0
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        for _ in range(rounds):
            answers = await asyncio.gather(*(client.send(target.list_call(base)) for _ in range(in_flight)),
                                           return_exceptions=True)
            ok += sum(1 for a in answers if isinstance(a, httpx.Response) and a.status_code == 200)
        return ok / (time.perf_counter() - started), in_flight * rounds - ok


def coldplate_target(data_dir: Path, src: Path | None = None, name: str = "coldplate") -> Target:
    """This tree's coldplate, or (`src`) the source of another revision on the same interpreter."""
    env = {**os.environ, "COLDPLATE_ADMIN_KEY": TOKEN}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return Target(
        name=name,
        command=[sys.executable, "-m", "coldplate", "server", "--host", "127.0.0.1", "--port", "{port}",
                 "--data-dir", str(data_dir)],
        env=env,
        list_call=lambda base: httpx.Request("GET", f"{base}/v1/instances",
                                             headers={"Authorization": f"Bearer {TOKEN}"}),
    )


def dstack_target(server_dir: Path) -> Target:
    if not (VENV / "bin" / "dstack").exists():
        print(f"installing dstack[server] into {VENV} (first run only)…", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "dstack[server]"], check=True)
    return Target(
        name="dstack",
        command=[str(VENV / "bin" / "dstack"), "server", "--host", "127.0.0.1", "--port", "{port}", "--token",
                 DSTACK_TOKEN, "-y", "-l", "warning"],
        env={**os.environ, "DSTACK_SERVER_DIR": str(server_dir), "HOME": str(server_dir)},
        list_call=lambda base: httpx.Request("POST", f"{base}/api/instances/list", json={},
                                             headers={"Authorization": f"Bearer {DSTACK_TOKEN}"}),
    )


def dstack_version() -> str:
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", "import dstack.version as v; print(v.__version__)"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def extract_src(ref: str, into: Path) -> Path:
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", ref, "src"], check=True, capture_output=True)
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--skip-dstack", action="store_true")
    parser.add_argument("--compare", metavar="REF", help="also measure coldplate at this git revision")
    args = parser.parse_args()
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["coldplate"] = measure(coldplate_target(Path(tmp) / "coldplate"), args.calls)
        if args.compare:
            src = extract_src(args.compare, Path(tmp) / "ref")
            name = f"@{args.compare[:10]}"
            results[name] = measure(coldplate_target(Path(tmp) / "ref-data", src, name), args.calls)
        if not args.skip_dstack:
            try:
                results["dstack"] = measure(dstack_target(Path(tmp) / "dstack"), args.calls)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"dstack could not be measured: {exc}", file=sys.stderr)
    rows = [("cold start (s)", "cold_start_s", "{:.2f}"), ("RSS after start (MB)", "rss_mb", "{:.0f}"),
            ("list p50 (ms)", "p50_ms", "{:.1f}"), ("list p99 (ms)", "p99_ms", "{:.1f}"),
            ("100 concurrent list (req/s)", "concurrent_rps", "{:.0f}"),
            ("  calls failed", "concurrent_failed", "{:d}")]
    cp = results["coldplate"]
    others = [name for name in results if name != "coldplate"]
    title = f" (dstack {dstack_version()})" if "dstack" in results else ""
    load = "wrk, 100 connections, 10 s" if shutil.which("wrk") else "httpx, 5 rounds of 100"
    print(f"\ncoldplate (this tree) vs {', '.join(others) or 'nothing'}{title}, {args.calls} sequential list calls, "
          f"empty fleet; concurrent: {load}; ratio: this tree / each other column")
    print(f"{'measure':<30}{'coldplate':>11}" + "".join(f"{n:>14}{'ratio':>7}" for n in others))
    for label, attr, fmt in rows:
        a = getattr(cp, attr)
        line = f"{label:<30}{fmt.format(a):>11}"
        for name in others:
            b = getattr(results[name], attr)
            ratio = f"{a / b:.2f}" if b and attr != "concurrent_failed" else "-"
            line += f"{fmt.format(b):>14}{ratio:>7}"
        print(line)


if __name__ == "__main__":
    main()
