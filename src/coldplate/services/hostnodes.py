"""Hostnodes: registration and heartbeats from agents, admin changes, offers and availability."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, DateTime, func, literal, literal_column, select, update
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import Hostnode, Instance
from coldplate.domain import catalog, pricing
from coldplate.domain.lifecycle import ASSIGNED, HOLDS_DISK, Status
from coldplate.ids import hash_secret, new_id, new_secret
from coldplate.services import outbox, signals
from coldplate.services.errors import InvalidInput, InvalidState, NotFound, Unauthorized
from coldplate.services.projects import ADMIN_PROJECT_ID, check_join_token

ADMIN_STATUSES = ("online", "draining", "maintenance")


@dataclass(frozen=True)
class HostSpec:
    name: str
    region: str
    city: str
    country: str
    address: str
    gpu_model: str
    gpu_count: int
    gpu_memory_mb: int
    gpu_uuids: list[str]
    vcpus: int
    memory_gb: int
    disk_gb: int
    port_lo: int
    port_hi: int
    prices_micros: dict[str, int]
    heartbeat_timeout_s: int = 30
    uptime_pct: float = 100.0


def _resolve_spec(spec: HostSpec) -> tuple[str, str]:
    gpu = catalog.resolve_gpu(spec.gpu_model) if spec.gpu_count > 0 else catalog.gpu_type("cpu")
    if gpu is None:
        raise InvalidInput(f"unknown GPU model {spec.gpu_model!r}", param="gpu.model")
    region = catalog.resolve_region(spec.region)
    if region is None:
        raise InvalidInput(f"unknown region {spec.region!r}", param="region")
    if spec.port_lo > spec.port_hi:
        raise InvalidInput("port_range must be [low, high]", param="port_range")
    return gpu.slug, region.slug


def _apply_spec(host: Hostnode, spec: HostSpec, gpu_slug: str, region: str) -> None:
    host.region, host.city, host.country, host.address = region, spec.city, spec.country, spec.address
    host.gpu_type, host.gpu_count = gpu_slug, spec.gpu_count
    host.gpu_memory_mb, host.gpu_uuids = spec.gpu_memory_mb, spec.gpu_uuids
    host.vcpus, host.memory_gb, host.disk_gb = spec.vcpus, spec.memory_gb, spec.disk_gb
    host.port_lo, host.port_hi = spec.port_lo, spec.port_hi
    host.gpu_price_micros = spec.prices_micros["gpu_per_hour"]
    host.spot_gpu_price_micros = spec.prices_micros["spot_gpu_per_hour"]
    host.vcpu_price_micros = spec.prices_micros.get("vcpu_per_hour", 0)
    host.memory_gb_price_micros = spec.prices_micros.get("memory_gb_per_hour", 0)
    host.disk_gb_price_micros = spec.prices_micros.get("disk_gb_per_hour", 0)
    host.heartbeat_timeout_s = spec.heartbeat_timeout_s
    host.uptime_pct = spec.uptime_pct
    host.gpus_free = host.gpu_count - len(host.gpus_used)


def register(session: Session, *, clock: Clock, join_token: str, spec: HostSpec) -> tuple[Hostnode, str]:
    """Register a host (or re-register one of the same name); returns it and a fresh agent token."""
    check_join_token(session, secret=join_token)
    gpu_slug, region = _resolve_spec(spec)
    token = new_secret("cpa")
    now = clock.now()
    host = session.scalars(select(Hostnode).where(Hostnode.name == spec.name)).first()
    if host is None:
        host = Hostnode(
            id=new_id("hn"), name=spec.name, status="online", created_at=now, gpus_used=[], ports_used=[],
            vcpus_used=0, memory_gb_used=0, disk_gb_used=0, generation=0, assignment_version=0,
        )
        session.add(host)
    elif host.status == "offline":
        host.status = "online"
    _apply_spec(host, spec, gpu_slug, region)
    host.agent_token_hash = hash_secret(token)
    host.last_heartbeat_at = now
    host.offline_since = None
    session.flush()
    outbox.record(session, clock=clock, project_id=ADMIN_PROJECT_ID, type="hostnode.registered",
                  data={"hostnode_id": host.id, "name": host.name})
    return host, token


def authenticate_agent(session: Session, *, token: str) -> Hostnode:
    host = session.scalars(select(Hostnode).where(Hostnode.agent_token_hash == hash_secret(token))).first()
    if host is None:
        raise Unauthorized("unknown agent token")
    return host


def heartbeat(session: Session, *, clock: Clock, host: Hostnode) -> Hostnode:
    host.last_heartbeat_at = clock.now()
    if host.status == "offline":
        host.status = "online"
        host.offline_since = None
        outbox.record(session, clock=clock, project_id=ADMIN_PROJECT_ID, type="hostnode.online",
                      data={"hostnode_id": host.id})
    session.flush()
    return host


def list_hostnodes(session: Session) -> list[Hostnode]:
    return list(session.scalars(select(Hostnode).order_by(Hostnode.region, Hostnode.name)))


def get_hostnode(session: Session, host_id: str) -> Hostnode:
    host = session.get(Hostnode, host_id)
    if host is None:
        raise NotFound(f"hostnode {host_id} not found", param="hostnode_id")
    return host


def update_hostnode(session: Session, *, clock: Clock, host_id: str, status: str | None,
                    prices_micros: dict[str, int] | None) -> Hostnode:
    host = get_hostnode(session, host_id)
    if status is not None:
        if status not in ADMIN_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(ADMIN_STATUSES)}", param="status")
        if host.status == "offline" and status == "online":
            raise InvalidState("an offline hostnode comes online when its agent heartbeats", param="status")
        host.status = status
    if prices_micros:
        for field, micros in prices_micros.items():
            setattr(host, _PRICE_COLUMNS[field], micros)
    session.flush()
    outbox.record(session, clock=clock, project_id=ADMIN_PROJECT_ID, type="hostnode.updated",
                  data={"hostnode_id": host.id, "status": host.status})
    return host


_PRICE_COLUMNS = {
    "gpu_per_hour": "gpu_price_micros", "spot_gpu_per_hour": "spot_gpu_price_micros",
    "vcpu_per_hour": "vcpu_price_micros", "memory_gb_per_hour": "memory_gb_price_micros",
    "disk_gb_per_hour": "disk_gb_price_micros",
}
PRICE_FIELDS = tuple(_PRICE_COLUMNS)


def host_prices(host: Hostnode) -> dict[str, str]:
    return {field: pricing.format_micros(getattr(host, column)) for field, column in _PRICE_COLUMNS.items()}


def assignments(session: Session, *, host: Hostnode) -> list[Instance]:
    return list(session.scalars(
        select(Instance).where(Instance.hostnode_id == host.id, Instance.status.in_([s.value for s in ASSIGNED]))
        .order_by(Instance.created_at, Instance.id)
    ))


def _silent_since(session: Session, now: datetime) -> ColumnElement[bool]:
    """SQL: the host's last sign of life is older than its own heartbeat timeout."""
    last = func.coalesce(Hostnode.last_heartbeat_at, Hostnode.created_at)
    if session.get_bind().dialect.name == "postgresql":
        return last + Hostnode.heartbeat_timeout_s * literal_column("interval '1 second'") < now
    # SQLite keeps datetimes as ISO text; julianday() counts days
    age_s = (func.julianday(literal(now, DateTime())) - func.julianday(last)) * 86400.0
    return age_s > Hostnode.heartbeat_timeout_s


def mark_silent_offline(session: Session, *, clock: Clock) -> list[str]:
    """Online hosts whose heartbeat is older than their timeout go offline: one query finds them
    all (not one per host), one statement marks them."""
    now = clock.now()
    gone = list(session.scalars(
        select(Hostnode.id).where(Hostnode.status.in_(ADMIN_STATUSES), _silent_since(session, now))
        .order_by(Hostnode.id).with_for_update(skip_locked=True)
    ))
    if not gone:
        return gone
    session.execute(
        update(Hostnode).where(Hostnode.id.in_(gone))
        .values(status="offline", offline_since=now, assignment_version=Hostnode.assignment_version + 1)
        .execution_options(synchronize_session=False)
    )
    for host_id in gone:
        signals.touch(session, host_id)
        outbox.record(session, clock=clock, project_id=ADMIN_PROJECT_ID, type="hostnode.offline",
                      data={"hostnode_id": host_id})
    session.flush()
    return gone


def lost_instances(session: Session, *, clock: Clock, grace_seconds: float) -> list[Instance]:
    """Instances on hosts that have been offline for longer than the grace period."""
    cutoff = clock.now() - timedelta(seconds=grace_seconds)
    return list(session.scalars(
        select(Instance).join(Hostnode, Instance.hostnode_id == Hostnode.id)
        .where(Hostnode.status == "offline", Hostnode.offline_since <= cutoff,
               Instance.status.in_([s.value for s in HOLDS_DISK]))
        .with_for_update(of=Instance, skip_locked=True)
    ))


__all__ = ["HostSpec", "Status", "register", "heartbeat", "assignments", "PRICE_FIELDS"]
