"""Under concurrency no GPU or port is given twice: 64 creates race for the last K GPUs."""

from __future__ import annotations

import threading
from collections import Counter

from fastapi.testclient import TestClient
from sqlalchemy import select

from coldplate.db.tables import Hostnode, Instance
from coldplate.services import instances
from coldplate.services.errors import NoCapacity
from coldplate.services.instances import InstanceRequest
from coldplate.state import AppState
from tests.conftest import Fleet

ATTEMPTS = 64


def test_64_concurrent_creates_for_the_last_k_gpus(client: TestClient, fleet: Fleet, project_key: str,
                                                   state: AppState) -> None:
    # 3 hosts × 2 GPUs, one GPU already taken → K = 5 free GPUs.
    hosts = [fleet.host(f"h{i}", count=2, ports=20) for i in range(3)]
    project_id = client.get("/v1/projects").json()["data"][-1]["id"]
    with state.tx() as session:
        instances.create(session, clock=state.clock, project_id=project_id,
                         req=InstanceRequest(name="first", gpu="h100"))
    k = 5
    barrier = threading.Barrier(ATTEMPTS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            with state.tx() as session:
                instances.create(session, clock=state.clock, project_id=project_id,
                                 req=InstanceRequest(name=f"racer-{i}", gpu="h100", ports=[]))
            result = "ok"
        except NoCapacity:
            result = "no_capacity"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(outcomes) == {"ok": k, "no_capacity": ATTEMPTS - k}

    with state.tx() as session:
        live = list(session.scalars(select(Instance)))
        host_rows = {h.id: h for h in session.scalars(select(Hostnode))}
    assert len(live) == k + 1
    for host_id in hosts:
        on_host = [i for i in live if i.hostnode_id == host_id]
        gpus = [g for i in on_host for g in i.gpu_indices]
        ports = [p for i in on_host for p in [i.ssh_port]]
        assert len(gpus) == len(set(gpus)) == 2, (host_id, gpus)  # every GPU given exactly once
        assert len(ports) == len(set(ports))
        assert sorted(host_rows[host_id].gpus_used) == sorted(gpus)
        assert host_rows[host_id].gpus_free == 0
