"""Races between every pair of lifecycle writers on one instance, through the real HTTP API.

One trial: a fresh 2-GPU host and an instance on it brought to a starting status (set up through
the services in one transaction); COPIES threads per writer start at one barrier (user actions
and agent reports through the app, each request its own session; the loops' service calls in
transactions of their own, as the loops make them); then the agent finishes every drain (as
`domain.lifecycle.plan` says) and the invariants are checked.
Used by tests/services/test_lifecycle_races.py and, for longer, bench/races.py."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from coldplate.db.tables import Hostnode, Instance
from coldplate.domain.lifecycle import AgentAction, Busy, Desired, Status, plan
from coldplate.services import actions, expiry, host_loss, hostnodes, instances, leases, projects
from coldplate.services.instances import InstanceRequest
from coldplate.state import AppState
from tests.hosts import host_info
from tests.invariants import Ack, ack_violations, allocation_violations, chain_violations

COPIES = 2  # threads per writer in a trial
HOST_LOST_GRACE_S = 120.0
USER_ACTIONS = ("create", "stop", "start", "restart", "terminate")
AGENT_REPORTS = ("starting", "ready", "stopped", "failed", "terminated")
LOOP_CALLS = ("expire", "host_lost")
WRITERS = USER_ACTIONS + AGENT_REPORTS + LOOP_CALLS
ACKNOWLEDGED = USER_ACTIONS + LOOP_CALLS  # what must have taken effect once answered (tests/invariants.py)
# Starting states that make each writer's move a legal one (the race then decides who wins).
# "draining" is a stop in progress, "terminating" a terminate in progress.
NATURAL: dict[str, tuple[str, ...]] = {
    "create": ("ready", "stopped"), "stop": ("ready", "starting"), "start": ("stopped",), "restart": ("ready",),
    "terminate": ("ready", "draining"), "starting": ("provisioning",), "ready": ("starting", "provisioning"),
    "stopped": ("ready", "draining", "terminating"), "failed": ("starting", "terminating"),
    "terminated": ("terminating",), "expire": ("ready", "stopped"), "host_lost": ("ready", "stopped"),
}
PATHS: dict[str, tuple[str, ...]] = {  # how setup gets there from provisioning
    "provisioning": (), "starting": ("r:starting",), "ready": ("r:starting", "r:ready"),
    "draining": ("r:starting", "r:ready", "a:stop"), "terminating": ("r:starting", "r:ready", "a:terminate"),
    "stopped": ("r:starting", "r:ready", "a:stop", "r:stopped"),
}


def pairs() -> list[tuple[str, str]]:
    return list(itertools.combinations_with_replacement(WRITERS, 2))


def starts_for(pair: tuple[str, str], per_pair: int) -> list[str]:
    """The starting states a pair is tried from: each writer's natural ones, interleaved."""
    a, b = (list(NATURAL[w]) for w in pair)
    merged: list[str] = []
    for s in itertools.chain.from_iterable(itertools.zip_longest(a, b)):
        if s is not None and s not in merged:
            merged.append(s)
    return merged[:per_pair]


@dataclass
class Outcome:
    writer: str
    result: str  # ok | a problem code | error:<what> (a 5xx or an exception: always a violation)


@dataclass
class TrialResult:
    pair: tuple[str, str]
    start: str
    outcomes: list[Outcome] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


class Racer:
    """Drives trials against one app (one database)."""

    def __init__(self, client: TestClient, state: AppState, user_headers: dict[str, str]) -> None:
        self.client, self.state, self.user = client, state, user_headers
        self.join_token = client.post("/v1/join-tokens", json={"name": "races"}).json()["token"]
        self.project_id = self._project_id(user_headers)
        self.count = 0
        self.agent: dict[str, dict[str, str]] = {}

    def _project_id(self, headers: dict[str, str]) -> str:
        with self.state.read() as session:
            principal = projects.authenticate(session, secret=headers["Authorization"].removeprefix("Bearer "))
            return principal.project_id

    def _host(self, session: Session) -> str:
        self.count += 1
        ports = 30000 + self.count * 10
        spec = host_info(f"race-{self.count}", gpus=2, vcpus=32, memory_gb=256, ports=(ports, ports + 9),
                         address="10.0.0.1")
        host, token = hostnodes.register(session, clock=self.state.clock, join_token=self.join_token, spec=spec,
                                           credential=None)
        self.agent[host.id] = {"Authorization": f"Bearer {token}"}
        return host.id

    def _create(self, host_id: str, name: str) -> Any:
        return self.client.post("/v1/instances", headers=self.user,
                                json={"name": name, "gpu": "h100", "hostnode_id": host_id})

    def _report(self, host_id: str, instance_id: str, status: str) -> Any:
        extra = {"failure_reason": "the image would not start"} if status == "failed" else {}
        return self.client.post(f"/v1/agent/instances/{instance_id}/transition", headers=self.agent[host_id],
                                json={"status": status, **extra})

    def _setup(self, start: str) -> tuple[str, str]:
        """A fresh host and an instance on it brought to `start`, in one transaction through the
        services (the setup is not what is raced; the moves after it go through the API)."""
        clock = self.state.clock
        with self.state.tx() as session:
            host_id = self._host(session)
            inst = instances.create(session, clock=clock, project_id=self.project_id,
                                    req=InstanceRequest(name=f"subject-{self.count}", gpu="h100",
                                                        hostnode_id=host_id))
            host = hostnodes.get_hostnode(session, host_id)
            for step in PATHS[start]:
                kind, what = step.split(":")
                if kind == "r":
                    actions.report(session, clock=clock, host=host, inst=inst, status=Status(what))
                elif what == "stop":
                    actions.stop(session, clock=clock, inst=inst)
                else:
                    actions.terminate(session, clock=clock, inst=inst)
            return host_id, inst.id

    def _prepare_loops(self, pair: tuple[str, str], host_id: str, instance_id: str) -> None:
        """The loops' preconditions, set in the database as time passing would: a reservation run out,
        a host silent past its grace period."""
        now = self.state.clock.now()
        with self.state.tx() as session:
            if "expire" in pair:
                inst = session.get(Instance, instance_id)
                assert inst is not None
                inst.expires_at = now - timedelta(seconds=1)
            if "host_lost" in pair:
                host = session.get(Hostnode, host_id)
                assert host is not None
                host.status, host.offline_since = "offline", now - timedelta(seconds=HOST_LOST_GRACE_S + 1)

    def _writer(self, writer: str, host_id: str, instance_id: str, n: int) -> Callable[[], tuple[str, str | None]]:
        """A callable doing one move; it returns (result, id of what was acknowledged or None)."""
        def http(call: Callable[[], Any]) -> tuple[str, str | None]:
            response = call()
            if response.status_code >= 500:
                return f"error:{response.status_code} {response.text[:200]}", None
            if response.status_code < 300:
                return "ok", str(response.json()["id"]) if writer == "create" else instance_id
            return str(response.json().get("code")), None

        if writer == "create":
            return lambda: http(lambda: self._create(host_id, f"racer-{self.count}-{n}"))
        if writer in USER_ACTIONS:
            return lambda: http(lambda: self.client.post(f"/v1/instances/{instance_id}/{writer}", headers=self.user))
        if writer in AGENT_REPORTS:
            return lambda: http(lambda: self._report(host_id, instance_id, writer))
        clock = self.state.clock

        def loop() -> tuple[str, str | None]:
            # One pass of the real loop's services: claim (a lease), then each claimed instance in its
            # own retried transaction, as loops/timers.py and loops/hosts.py do.
            owner, ttl = leases.new_owner(writer), timedelta(seconds=60)
            with self.state.tx() as session:
                if writer == "expire":
                    claimed = expiry.claim_due(session, clock=clock, owner=owner, ttl=ttl, limit=100)
                else:
                    claimed = host_loss.claim_lost(session, clock=clock, owner=owner, grace_seconds=HOST_LOST_GRACE_S,
                                                   ttl=ttl, limit=100)

            def act(session: Session, claimed_id: str) -> bool:
                if writer == "expire":
                    return expiry.expire(session, clock=clock, instance_id=claimed_id, owner=owner)
                return host_loss.fail_lost(session, clock=clock, instance_id=claimed_id, owner=owner,
                                           grace_seconds=HOST_LOST_GRACE_S)

            done = [i for i in claimed if self.state.transact(lambda session, i=i: act(session, i))]
            return "ok", instance_id if instance_id in done else None
        return loop

    def _finish_drains(self, host_id: str) -> None:
        """Act as the agent until nothing on the host is draining: stop (or stop and delete) each one."""
        for _ in range(10):
            pending = False
            for item in self.client.get("/v1/agent/assignments", params={"wait": 0},
                                        headers=self.agent[host_id]).json()["assignments"]:
                step = plan(Status(item["status"]), Desired(item["desired"]), None, Busy.IDLE)
                if step.action in (AgentAction.STOP, AgentAction.TERMINATE):
                    pending = True
                    report = "terminated" if step.action is AgentAction.TERMINATE else "stopped"
                    self._report(host_id, item["instance_id"], report)
            if not pending:
                return
        raise AssertionError(f"drains on {host_id} did not finish")

    def trial(self, pair: tuple[str, str], start: str) -> TrialResult:
        result = TrialResult(pair, start)
        host_id, instance_id = self._setup(start)
        self._prepare_loops(pair, host_id, instance_id)
        moves = [(w, self._writer(w, host_id, instance_id, n)) for n, w in enumerate(pair * COPIES)]
        barrier = threading.Barrier(len(moves))
        acks: list[Ack] = []
        lock = threading.Lock()

        def run(writer: str, move: Callable[[], tuple[str, str | None]]) -> None:
            barrier.wait()
            try:
                outcome, acked = move()
            except Exception as exc:  # an exception out of a loop's service call is a bug too
                outcome, acked = f"error:{exc!r}", None
            with lock:
                result.outcomes.append(Outcome(writer, outcome))
                if acked is not None and writer in ACKNOWLEDGED:
                    acks.append(Ack(acked, writer))

        threads = [threading.Thread(target=run, args=move) for move in moves]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._finish_drains(host_id)
        result.violations += [f"{o.writer}: {o.result}" for o in result.outcomes if o.result.startswith("error:")]
        with self.state.read() as session:
            ids = list(session.scalars(select(Instance.id).where(Instance.hostnode_id == host_id)))
            result.violations += allocation_violations(session, [host_id])
            result.violations += chain_violations(session, ids)
            result.violations += ack_violations(session, acks)
        return result
