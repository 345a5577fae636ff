"""End to end on a host with a real NVIDIA GPU, through the API: a `coldplate server` and a
`coldplate agent --runtime process` (NVML inventory, bubblewrap sandbox) on this machine, then

1. the host registers its real GPUs (model mapped to a catalog slug, count, not simulated);
2. an instance given one GPU runs an 8192² matrix product: POST → ready, and the utilisation its
   heartbeats report through `GET /v1/instances/{id}/metrics` while it runs;
3. from inside it: only its GPU's device node, and torch sees one device even with
   CUDA_VISIBLE_DEVICES removed;
4. a second GPU instance while the only GPU is taken: 409 no_capacity (no overbooking);
5. once the product is stopped, an instance holding the same GPU idle reports ≤ 5 % (what idle
   detection reads).

(An instance given no GPU is a `cpu` instance, placed only on hosts without GPUs, so it cannot run
beside these; what it sees is tested on this host through the runtime by tests/gpu.)

Run where the GPU is (see docs/gpu-validation.md): `python3 scripts/gpu_check.py [--out FILE]`.
Prints one line per check and exits 1 if any failed."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.gpu.workloads

from tests.gpu.workloads import MATMUL, VISIBLE  # noqa: E402

results: list[dict[str, Any]] = []


def check(name: str, ok: bool, seen: Any) -> None:
    results.append({"check": name, "ok": ok, "seen": seen})
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {seen}", flush=True)


def until(fetch: Callable[[], float | None], done: Callable[[float], bool], timeout: float) -> float | None:
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = fetch()
        if value is not None and done(value):
            return value
        time.sleep(0.5)
    return value


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="cp-gpu-"))
    url = f"http://127.0.0.1:{args.port}"
    cp = [sys.executable, "-m", "coldplate"]
    server = subprocess.Popen([*cp, "server", "--data-dir", str(data / "server"), "--port", str(args.port)])
    agent: subprocess.Popen[bytes] | None = None
    user: httpx.Client | None = None
    try:
        until(lambda: _healthy(url), lambda ok: ok == 1, 60)
        admin = httpx.Client(base_url=url, timeout=120,
                             headers={"Authorization": f"Bearer {(data / 'server' / 'admin-key').read_text().strip()}"})
        join = admin.post("/v1/join-tokens", json={"name": "gpu-check"}).json()["token"]
        agent = subprocess.Popen([*cp, "agent", "--server", url, "--runtime", "process", "--name", "gpu-host",
                                  "--region", "eu", "--heartbeat-interval", "1", "--data-dir", str(data / "agent")],
                                 env={**os.environ, "COLDPLATE_JOIN_TOKEN": join})
        host = until(lambda: _host(admin), lambda n: n > 0, 60)
        hosts = admin.get("/v1/hostnodes").json()["data"]
        seen = [{k: h[k] for k in ("gpu", "gpus_free", "sandbox", "status")} for h in hosts]
        check("the host registers its real GPUs", bool(host) and hosts[0]["gpu"]["type"] != "cpu"
              and hosts[0]["sandbox"] == "bubblewrap", seen)
        gpu, count = hosts[0]["gpu"]["type"], hosts[0]["gpu"]["count"]
        project = admin.post("/v1/projects", json={"name": "gpu-check"}).json()["id"]
        key = admin.post(f"/v1/projects/{project}/keys",
                         json={"name": "k", "scopes": ["instances:read", "instances:write"]}).json()["key"]
        user = httpx.Client(base_url=url, timeout=180, headers={"Authorization": f"Bearer {key}"})
        python = sys.executable

        started = time.monotonic()
        busy = _create(user, {"name": "busy", "gpu": gpu, "gpu_count": count, "cmd": [python, "-c", MATMUL, "90"]})
        ready = user.get(f"/v1/instances/{busy['id']}/wait", params={"status": "ready", "timeout": 60})
        check("POST → ready (s)", ready.status_code == 200, round(time.monotonic() - started, 2))
        peak = until(lambda: _util(user, busy["id"]), lambda u: u >= 50, 60)
        check("utilisation while the matrix product runs (%)", peak is not None and peak >= 50, peak)

        inside = _exec(user, busy["id"], "ls -1 /dev | grep '^nvidia' | tr '\\n' ' '; echo; "
                                         f"env -u CUDA_VISIBLE_DEVICES {python} -c {shlex.quote(VISIBLE)}")
        check("inside the GPU instance: device nodes, then torch's count and UUID", inside["exit_code"] == 0
              and inside["stdout"].split("\n")[1].startswith(f"{count} "), inside["stdout"].strip())

        more = user.post("/v1/instances", json={"name": "more", "gpu": gpu, "gpu_count": 1})
        check("another GPU instance while all are taken", more.status_code == 409,
              f"{more.status_code} {more.json().get('code', '')}")

        user.post(f"/v1/instances/{busy['id']}/stop", json={"force": True, "grace_seconds": 0})
        user.get(f"/v1/instances/{busy['id']}/wait", params={"status": "stopped", "timeout": 60})
        idle = _create(user, {"name": "idle", "gpu": gpu, "gpu_count": count, "cmd": ["sleep", "600"]})
        user.get(f"/v1/instances/{idle['id']}/wait", params={"status": "ready", "timeout": 60})
        low = until(lambda: _util(user, idle["id"]), lambda u: u <= 5, 60)
        check("utilisation of the same GPU once the product stopped (%)", low is not None and low <= 5, low)

    except Exception as error:  # report what broke, with the checks that ran before it
        check("the run completed", False, repr(error))
    finally:
        if user is not None:  # workloads outlive their agent: end them while it runs
            _terminate_all(user)
        for process in (agent, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


def _healthy(url: str) -> float:
    try:
        return 1.0 if httpx.get(f"{url}/healthz", timeout=1).status_code == 200 else 0.0
    except httpx.HTTPError:
        return 0.0


def _host(admin: httpx.Client) -> float:
    return float(len([h for h in admin.get("/v1/hostnodes").json()["data"] if h["status"] == "online"]))


def _util(user: httpx.Client, instance_id: str) -> float | None:
    samples = user.get(f"/v1/instances/{instance_id}/metrics").json()["data"]
    values = [s["gpu_util_pct"] for s in samples[-3:] if "gpu_util_pct" in s]
    return max(values) if values else None


def _create(user: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = user.post("/v1/instances", json=body)
    if answer.status_code != 201:
        raise RuntimeError(f"create {body['name']}: {answer.status_code} {answer.text}")
    return dict(answer.json())


def _terminate_all(user: httpx.Client) -> None:
    for inst in user.get("/v1/instances").json()["data"]:
        if inst["status"] != "terminated":
            user.post(f"/v1/instances/{inst['id']}/terminate", json={"force": True, "grace_seconds": 0})
            user.get(f"/v1/instances/{inst['id']}/wait", params={"status": "terminated", "timeout": 30})


def _exec(user: httpx.Client, instance_id: str, script: str) -> dict[str, Any]:
    answer = user.post(f"/v1/instances/{instance_id}/exec", json={"cmd": script, "timeout": 120})
    return dict(answer.json()) if answer.status_code == 200 else {"exit_code": -1, "stdout": answer.text}


if __name__ == "__main__":
    sys.exit(main())
