"""Webhook delivery lag: event committed → the receiver has it, at a steady event rate.

    python bench/webhooks.py [--rate 100] [--seconds 20] [--database-url URL]

Events are committed through the service layer (one `instance.updated` outbox row per
transaction) at `--rate` per second, in the same process as the dispatcher, which runs as the
server runs it (the loop runner, woken after each commit by the `outbox` wake-up); the receiver is
a threaded http.server on 127.0.0.1 that verifies every signature. Lag is measured on one
monotonic clock from just after the commit returns to the receiver reading the request. The
baseline, measured in the same run, is a bare HTTP POST of the same size to the same receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook

from coldplate.loops import runner
from coldplate.loops import webhooks as dispatcher
from coldplate.server import build_state
from coldplate.services import outbox, projects, webhooks
from coldplate.state import AppState, Settings


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 drops concurrent connects (a 1 s SYN retry each)

class Receiver:
    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.verify: Webhook | None = None
        self.bad = 0
        bench = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                at = time.perf_counter()
                if bench.verify is not None:
                    try:
                        payload = bench.verify.verify(body, dict(self.headers.items()))
                        bench.arrived.setdefault(int(payload["data"]["n"]), at)
                    except Exception:
                        bench.bad += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


def start_dispatcher(state: AppState) -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        state.signals.bind(loop)
        loop.call_soon(ready.set)
        task = loop.create_task(runner.run_forever(state, "webhooks", dispatcher.run_once))
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    threading.Thread(target=run, daemon=True).start()
    ready.wait()
    return loop


def baseline(url: str, size: int, count: int) -> list[float]:
    body = b"x" * size
    out = []
    with httpx.Client() as client:
        for _ in range(count):
            t0 = time.perf_counter()
            client.post(url, content=body)
            out.append(time.perf_counter() - t0)
    return out


def measure(url: str, rate: int, seconds: int) -> tuple[list[float], int, float, int]:
    state = build_state(url, settings=Settings(allow_private_webhooks=True))
    receiver = Receiver()
    with state.tx() as session:
        project = projects.create_project(session, clock=state.clock, name="bench").id
        hook = webhooks.create(session, clock=state.clock, project_id=project, url=receiver.url, event_types=[],
                               description="bench", enabled=True)
    receiver.verify = Webhook(hook.secret)
    loop = start_dispatcher(state)
    committed: dict[int, float] = {}
    total = rate * seconds
    started = time.perf_counter()
    for n in range(total):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with state.tx() as session:
            outbox.record(session, clock=state.clock, project_id=project, type="instance.updated",
                          instance_id="inst_bench", data={"n": n, "labels": {"bench": "webhooks"}})
        committed[n] = time.perf_counter()
    achieved = total / (time.perf_counter() - started)
    deadline = time.monotonic() + 15
    while len(receiver.arrived) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    for task in asyncio.all_tasks(loop):
        loop.call_soon_threadsafe(task.cancel)
    lags = [receiver.arrived[n] - committed[n] for n in range(total) if n in receiver.arrived]
    receiver.server.shutdown()
    state.sessions.kw["bind"].dispose()
    return lags, total - len(lags), achieved, receiver.bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=100, help="events per second")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        database = url.split(":", 1)[0]
        print(f"  {database}: {args.rate} events/s for {args.seconds}s …", file=sys.stderr)
        lags, lost, achieved, bad = measure(url, args.rate, args.seconds)
        receiver = Receiver()
        size = len(json.dumps({"type": "instance.updated", "data": {"n": 1, "labels": {"bench": "webhooks"}}}))
        base = baseline(receiver.url, size + 120, 200)
        receiver.server.shutdown()
    print(f"\nWebhook delivery lag, event committed → receiver has it ({database}, "
          f"{achieved:.0f} events/s for {args.seconds}s, {len(lags)} delivered, {lost} missing, "
          f"{bad} failed verification)")
    print(f"{'measure':<28}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    print(f"{'commit → received':<28}{pct(lags, 50):>10.1f}{pct(lags, 90):>10.1f}{pct(lags, 99):>10.1f}"
          f"{max(lags) * 1000:>10.1f}")
    print(f"{'bare POST (baseline)':<28}{pct(base, 50):>10.1f}{pct(base, 90):>10.1f}{pct(base, 99):>10.1f}"
          f"{max(base) * 1000:>10.1f}")
    print(f"target: p99 ≤ 1000 ms — {'met' if pct(lags, 99) <= 1000 and not lost else 'NOT met'}"
          f" (mean {statistics.fmean(lags) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
