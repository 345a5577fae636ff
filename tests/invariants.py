"""Invariants of allocation and lifecycle, checked against the database after concurrent writers.

Used by the race suite (tests/services/test_lifecycle_races.py) and its soak (bench/races.py).
Each check returns a list of violations (empty: all held), so a soak can count them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from coldplate.db.tables import Event, Hostnode, Instance
from coldplate.domain.lifecycle import HOLDS_DISK, HOLDS_GPUS, Status, can_transition


def host_ports(inst: Instance) -> list[int]:
    return [p["external_port"] for p in inst.ports] + ([inst.ssh_port] if inst.ssh_port else [])


def allocation_violations(session: Session, host_ids: Iterable[str] | None = None) -> list[str]:
    """No GPU or port held by two live instances; every hostnode's counters equal what its live
    instances hold (GPUs, vCPUs and memory while running; disk and ports until terminated)."""
    query = select(Hostnode)
    if host_ids is not None:
        query = query.where(Hostnode.id.in_(list(host_ids)))
    out: list[str] = []
    for host in session.scalars(query):
        on_host = list(session.scalars(select(Instance).where(Instance.hostnode_id == host.id)))
        computing = [i for i in on_host if Status(i.status) in HOLDS_GPUS]
        storing = [i for i in on_host if Status(i.status) in HOLDS_DISK]
        gpus = Counter(g for i in computing for g in i.gpu_indices)
        ports = Counter(p for i in storing for p in host_ports(i))
        out += [f"{host.name}: GPU {g} held by {n} live instances" for g, n in gpus.items() if n > 1]
        out += [f"{host.name}: port {p} held by {n} live instances" for p, n in ports.items() if n > 1]
        expected = {
            "gpus_used": sorted(gpus), "gpus_free": host.gpu_count - len(gpus),
            "vcpus_used": sum(i.vcpus for i in computing), "memory_gb_used": sum(i.memory_gb for i in computing),
            "disk_gb_used": sum(i.disk_gb for i in storing), "ports_used": sorted(ports),
        }
        actual = {
            "gpus_used": sorted(host.gpus_used), "gpus_free": host.gpus_free, "vcpus_used": host.vcpus_used,
            "memory_gb_used": host.memory_gb_used, "disk_gb_used": host.disk_gb_used,
            "ports_used": sorted(host.ports_used),
        }
        out += [f"{host.name}: {k} is {actual[k]}, its live instances hold {v}"
                for k, v in expected.items() if actual[k] != v]
    return out


def chain_violations(session: Session, instance_ids: Iterable[str]) -> list[str]:
    """Every instance's status events, in seq order, start at creation and follow the lifecycle table,
    each from where the last one left off, ending at the instance's status."""
    out: list[str] = []
    for instance_id in instance_ids:
        inst = session.get(Instance, instance_id)
        if inst is None:
            out.append(f"{instance_id}: no such instance")
            continue
        events = session.scalars(select(Event).where(Event.instance_id == instance_id,
                                                     Event.to_status.is_not(None)).order_by(Event.seq))
        previous: str | None = None
        for event in events:
            assert event.to_status is not None
            if event.from_status != previous:
                out.append(f"{instance_id}: event {event.from_status}→{event.to_status} follows {previous}")
            elif previous is None and event.to_status != Status.PROVISIONING:
                out.append(f"{instance_id}: created as {event.to_status}")
            elif previous is not None and not can_transition(Status(previous), Status(event.to_status)):
                out.append(f"{instance_id}: {previous}→{event.to_status} is not in the lifecycle table")
            previous = event.to_status
        if previous != inst.status:
            out.append(f"{instance_id}: is {inst.status}, its events end at {previous}")
    return out


@dataclass(frozen=True)
class Ack:
    """An action that was answered as done: it must have taken effect."""

    instance_id: str
    action: str  # create | stop | start | restart | terminate | expire | host_lost


# Where an instance may end (after the agent finished every drain) once each action was acknowledged.
# A later acknowledged action may take it further; a failure reported meanwhile ends a stop, never a terminate.
ACK_ENDS: dict[str, frozenset[str]] = {
    "create": frozenset({"provisioning"}),  # no writer in a trial touches the instances it creates
    "terminate": frozenset({"terminated"}),
    "expire": frozenset({"terminated"}),
    "stop": frozenset({"stopped", "terminated", "failed"}),
    "restart": frozenset({"provisioning", "starting", "ready", "stopped", "terminated", "failed"}),
    "start": frozenset({"provisioning", "starting", "ready", "stopped", "terminated", "failed"}),
    "host_lost": frozenset({"failed", "terminated"}),
}
# The event an acknowledged action must have written.
ACK_EVENTS: dict[str, tuple[str, str | None]] = {
    "stop": ("draining", "user"), "restart": ("draining", "restart"), "start": ("provisioning", "user"),
}


def ack_violations(session: Session, acks: Iterable[Ack]) -> list[str]:
    out: list[str] = []
    for ack in acks:
        inst = session.get(Instance, ack.instance_id)
        assert inst is not None
        if inst.status not in ACK_ENDS[ack.action]:
            out.append(f"{ack.instance_id}: {ack.action} was acknowledged, the instance ended {inst.status}")
        if ack.action == "host_lost" and not inst.failure_reason:
            out.append(f"{ack.instance_id}: host_lost was acknowledged, no failure is recorded")
        if ack.action in ACK_EVENTS:
            to_status, reason = ACK_EVENTS[ack.action]
            found = session.scalars(select(Event.id).where(Event.instance_id == ack.instance_id,
                                                           Event.to_status == to_status, Event.reason == reason))
            if found.first() is None:
                out.append(f"{ack.instance_id}: {ack.action} was acknowledged, no →{to_status} ({reason}) event")
    return out
