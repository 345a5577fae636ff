"""Where the agents' calls do their database work: worker threads of their own, token checks,
heartbeats and assignment reads in groups.

A fleet's calls (10,000 hosts: hundreds a second, thousands at once when it starts) go through
worker threads that no user request waits for (AGENT_THREADS, and one for each kind of group), so
a fleet starting or a burst of heartbeats cannot queue a user's list or create behind it
(measured at 10,000 hosts: 10,000-12,000 calls waiting in the shared pool for over a minute, user
requests 10-40 s). The calls that come in hundreds are grouped (batcher.Batcher): one query checks
every token that arrived while the last group ran; one transaction writes every heartbeat; one
read answers every long-poll that needs one."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from anyio import CapacityLimiter, to_thread
from fastapi import Request
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError
from sqlalchemy.orm import Session

from coldplate import protocol
from coldplate.api.batcher import Batcher
from coldplate.db.tables import Instance
from coldplate.services import agent_tasks, hostnodes, metrics
from coldplate.services.errors import NotFound, Unauthorized
from coldplate.services.hostnodes import Beat
from coldplate.state import AppState

T = TypeVar("T")
log = logging.getLogger(__name__)

AGENT_THREADS = 16  # for registrations, reports and task results; SQLite takes one writer at a time anyway


@dataclass(frozen=True)
class Pulse:
    """One heartbeat as the agent sent it: its token and its metric samples (instance id, values)."""

    token: str
    samples: Sequence[tuple[str, dict[str, float]]]


class AgentGate:
    def __init__(self, app: AppState) -> None:
        self.app = app
        self.limiter = CapacityLimiter(AGENT_THREADS)
        # a thread each for the groups, apart: a token check never waits behind registrations
        groups = CapacityLimiter(3)
        self.checks: Batcher[str, str] = Batcher(self._check, limiter=groups)
        self.beats: Batcher[Pulse, Beat] = Batcher(self._beat, limiter=groups)
        self.reads: Batcher[str, protocol.Assignments] = Batcher(self._read, limiter=groups)

    async def transact(self, fn: Callable[[Session], T]) -> T:
        """`fn` in a transaction (AppState.transact) in one of the agents' worker threads: the
        database work of one registration, report or task result."""
        return await to_thread.run_sync(self.app.transact, fn, limiter=self.limiter)

    async def host_of(self, token: str) -> str:
        """The id of the hostnode whose agent holds `token`; Unauthorized if none does."""
        return await self.checks.submit(token)

    async def beat(self, pulse: Pulse) -> Beat:
        return await self.beats.submit(pulse)

    async def assignments(self, host_id: str) -> protocol.Assignments:
        """What the host's agent is to run and do, read with the other hosts' that were asked for
        meanwhile (a fleet that starts, or a server that restarts, asks for every host's at once)."""
        return await self.reads.submit(host_id)

    def _check(self, tokens: Sequence[str]) -> list[str | Exception]:
        with self.app.read() as session:
            found = hostnodes.authenticate_agents(session, tokens=tokens)
        return [found.get(token) or Unauthorized("unknown agent token") for token in tokens]

    def _beat(self, pulses: Sequence[Pulse]) -> list[Beat | Exception]:
        def write(session: Session) -> list[Beat | Exception]:
            beats = hostnodes.heartbeats(session, clock=self.app.clock, tokens=[p.token for p in pulses])
            metrics.record(session, clock=self.app.clock,
                           samples=[(beat.host_id, instance_id, values)
                                    for pulse, beat in zip(pulses, beats, strict=True) if isinstance(beat, Beat)
                                    for instance_id, values in pulse.samples])
            return list(beats)

        return self.app.transact(write)

    def _read(self, host_ids: Sequence[str]) -> list[protocol.Assignments | Exception]:
        with self.app.read() as session:
            hosts = hostnodes.get_hostnodes(session, host_ids)
            listed = hostnodes.assignments(session, host_ids=hosts)
            pending = agent_tasks.pending(session, host_ids=hosts)
            return [protocol.Assignments(
                version=hosts[h].assignment_version, server_id=self.app.origin,
                assignments=[a for a in map(_assignment, listed[h]) if a is not None],
                tasks=[protocol.Task(id=t.id, kind=t.kind, instance_id=t.instance_id, params=t.params)
                       for t in pending[h]])
                if h in hosts else NotFound(f"hostnode {h} not found", param="hostnode_id") for h in host_ids]


def _assignment(inst: Instance) -> protocol.Assignment | None:
    """The instance as its agent reads it; a row that does not fit the protocol (or cannot be
    encoded) is logged and skipped, so that it cannot stall the host's other assignments."""
    try:
        assignment = protocol.Assignment(
            instance_id=inst.id, project_id=inst.project_id, name=inst.name, desired=inst.desired,
            status=inst.status, image=inst.image, cmd=inst.cmd, entrypoint=inst.entrypoint, env=inst.env,
            gpu_indices=inst.gpu_indices, vcpus=inst.vcpus, memory_gb=inst.memory_gb, disk_gb=inst.disk_gb,
            ports=inst.ports, ssh_port=inst.ssh_port, ssh_keys=inst.ssh_keys, volumes=inst.volumes,
            cloud_init=inst.cloud_init, grace_seconds=inst.grace_seconds, force=inst.force,
        )
        assignment.model_dump_json()
    except (ValidationError, PydanticSerializationError, ValueError):
        log.exception("assignment skipped: the row does not fit the agent protocol", extra={"instance_id": inst.id})
        return None
    return assignment


def gate(request: Request) -> AgentGate:
    agent_gate: AgentGate = request.app.state.agent_gate
    return agent_gate
