"""Hostnodes: registration and heartbeats from agents, admin changes, offers and availability."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import Hostnode, Instance
from coldplate.domain import catalog, pricing
from coldplate.domain.lifecycle import (
    ADMIN_HOST_STATUSES,
    ASSIGNED,
    HostStatus,
    Status,
    host_change_allowed,
)
from coldplate.ids import hash_secret, is_secret, new_id, new_secret
from coldplate.protocol import HostInfo
from coldplate.services import join_tokens, outbox, projects
from coldplate.services.capacity import HOSTNODES
from coldplate.services.errors import Forbidden, InvalidInput, InvalidState, NotFound, Unauthorized
from coldplate.services.projects import ADMIN_PROJECT_ID

# Where the agent leaves the timeout to the server, the API passes Settings.host_timeout_s; this is
# the same default (three missed 60 s beats) for callers of the service itself.
DEFAULT_HOST_TIMEOUT_S = 180
ADMIN_STATUSES = tuple(s.value for s in ADMIN_HOST_STATUSES)


def _resolve_spec(spec: HostInfo) -> tuple[str, str]:
    gpu = catalog.resolve_gpu(spec.gpu.model) if spec.gpu.count > 0 else catalog.gpu_type("cpu")
    if gpu is None:
        raise InvalidInput(f"unknown GPU model {spec.gpu.model!r}", param="gpu.model")
    region = catalog.resolve_region(spec.region)
    if region is None:
        raise InvalidInput(f"unknown region {spec.region!r}", param="region")
    if spec.port_range[0] > spec.port_range[1]:
        raise InvalidInput("port_range must be [low, high]", param="port_range")
    return gpu.slug, region.slug


def _apply_spec(host: Hostnode, spec: HostInfo, gpu_slug: str, region: str) -> None:
    host.region, host.city, host.country, host.address = region, spec.location.city, spec.location.country, spec.address
    host.gpu_type, host.gpu_count = gpu_slug, spec.gpu.count
    host.gpu_memory_mb, host.gpu_uuids = spec.gpu.memory_mb, list(spec.gpu.uuids)
    host.vcpus, host.memory_gb, host.disk_gb = spec.vcpus, spec.memory_gb, spec.disk_gb
    host.port_lo, host.port_hi = spec.port_range
    for field, column in _PRICE_COLUMNS.items():
        setattr(host, column, pricing.to_micros(getattr(spec.prices, field)))
    host.heartbeat_timeout_s = spec.heartbeat_timeout_seconds or DEFAULT_HOST_TIMEOUT_S
    host.uptime_pct = spec.uptime_pct
    isolation = spec.isolation
    host.sandbox = None if isolation is None else isolation.sandbox
    host.enforced_limits = [] if isolation is None else sorted(set(isolation.enforced_limits))
    host.gpus_free = host.gpu_count - len(host.gpus_used)


def _is_admin(session: Session, secret: str) -> bool:
    try:
        return projects.authenticate(session, secret=secret).is_admin
    except Unauthorized:
        return False


def register(session: Session, *, clock: Clock, spec: HostInfo, join_token: str | None,
             credential: str | None) -> tuple[Hostnode, str]:
    """Register a new host, or re-register an existing one; returns it and its agent token.

    `credential` is the bearer the caller sent. A name nobody holds needs a join token (one use of
    it) or an admin key. A registered name needs that host's own agent token, which stays valid (an
    agent restarting with its token file), or an admin key, which issues a fresh token and so locks
    out whoever held the old one (a reinstalled host that lost its file). A join token alone never
    takes over a registered name: that was a way to hijack a live host and its tenants' secrets.

    A new name's agent may propose its own token as `credential` (the shape new_secret gives, held
    by no other host): it keeps the token before it asks, so that when the answer is lost (the
    request timed out while the server was busy, and the registration was committed all the same)
    the retry presents the token that was stored, instead of being refused for ever."""
    host = session.scalars(select(Hostnode).where(Hostnode.name == spec.name)).first()
    own = host is not None and credential is not None and host.agent_token_hash == hash_secret(credential)
    admin = not own and credential is not None and _is_admin(session, credential)
    if host is not None and not (own or admin):
        raise Forbidden(f"hostnode {spec.name!r} is already registered; re-registering it needs its own agent "
                        "token (kept in the agent's data directory) or an admin key", param="name")
    spends = host is None and not admin
    if spends and join_token is None:
        raise Unauthorized("a new hostnode needs a join token", param="join_token")
    gpu_slug, region = _resolve_spec(spec)
    proposed = spends and credential is not None and _free_agent_token(session, credential)
    token = credential if (own or proposed) and credential is not None else new_secret("cpa")
    now = clock.now()
    if host is None:
        host = Hostnode(
            id=new_id("hn"), name=spec.name, status=HostStatus.ONLINE.value, created_at=now, gpus_used=[],
            ports_used=[], vcpus_used=0, memory_gb_used=0, disk_gb_used=0, generation=0, assignment_version=0,
        )
        session.add(host)
    elif host.status == HostStatus.OFFLINE:
        set_status(host, HostStatus.ONLINE, by_agent=True)
    _apply_spec(host, spec, gpu_slug, region)
    host.agent_token_hash = hash_secret(token)
    host.last_heartbeat_at = now
    host.offline_since = None
    session.flush()
    outbox.record(session, clock=clock, project_id=ADMIN_PROJECT_ID, type="hostnode.registered",
                  data={"hostnode_id": host.id, "name": host.name})
    if spends and join_token is not None:
        # last: its UPDATE locks the token's row until the commit, and every new host of a fleet spends
        # the same token (taken first, it held 16 registrations in a queue: 10,000 hosts took 200 s)
        join_tokens.use(session, clock=clock, secret=join_token)
    return host, token


def _free_agent_token(session: Session, credential: str) -> bool:
    """Whether an agent may take `credential` as its token: well formed, and no host's already."""
    return is_secret(credential, "cpa") and session.scalar(
        select(Hostnode.id).where(Hostnode.agent_token_hash == hash_secret(credential))) is None


def set_status(host: Hostnode, target: HostStatus, *, by_agent: bool) -> None:
    """The one place a hostnode's status changes after an admin's check: the table in domain/lifecycle."""
    current = HostStatus(host.status)
    if not host_change_allowed(current, target, by_agent=by_agent):
        hint = "; an offline hostnode comes online when its agent heartbeats" if target is HostStatus.ONLINE else ""
        raise InvalidState(f"hostnode {host.id} is {current}; it cannot become {target}{hint}", param="status")
    host.status = target.value


def authenticate_agent(session: Session, *, token: str) -> str:
    """The id of the hostnode whose agent holds `token` (one indexed lookup of one column)."""
    host_id = authenticate_agents(session, tokens=[token]).get(token)
    if host_id is None:
        raise Unauthorized("unknown agent token")
    return host_id


def authenticate_agents(session: Session, *, tokens: Collection[str]) -> dict[str, str]:
    """The hostnode id of each token that is some agent's, in one query; unknown tokens are left out."""
    by_hash = {hash_secret(token): token for token in tokens}
    found = session.execute(select(Hostnode.agent_token_hash, Hostnode.id)
                            .where(Hostnode.agent_token_hash.in_(by_hash)))
    return {by_hash[row.agent_token_hash]: row.id for row in found}


@dataclass(frozen=True)
class Beat:
    """What a heartbeat leaves of its hostnode: whose it was, and the status it is in now."""

    host_id: str
    status: str
    heartbeat_timeout_s: int


def heartbeats(session: Session, *, clock: Clock, tokens: Sequence[str]) -> list[Beat | Unauthorized]:
    """The agents holding `tokens` are alive now: one answer per token, in order (an unknown token's
    is Unauthorized). Hosts that were online stay so with one UPDATE for the whole group, the path of
    nearly every beat of a large fleet; an offline host comes back online with an event."""
    h = HOSTNODES.c
    now = clock.now()
    by_hash = {hash_secret(token): token for token in tokens}
    seen = {by_hash[row.agent_token_hash]: Beat(row.id, row.status, row.heartbeat_timeout_s)
            for row in session.execute(update(HOSTNODES)
                                       .where(h.agent_token_hash.in_(by_hash), h.status != HostStatus.OFFLINE.value)
                                       .values(last_heartbeat_at=now)
                                       .returning(h.agent_token_hash, h.id, h.status, h.heartbeat_timeout_s))}
    answers: list[Beat | Unauthorized] = []
    for token in tokens:
        if token not in seen:
            try:
                seen[token] = _back_online(session, clock=clock, token=token)
            except Unauthorized as exc:  # checked before anything is written for this token
                answers.append(exc)
                continue
        answers.append(seen[token])
    return answers


def _back_online(session: Session, *, clock: Clock, token: str) -> Beat:
    host = get_hostnode(session, authenticate_agent(session, token=token))
    host.last_heartbeat_at = clock.now()
    set_status(host, HostStatus.ONLINE, by_agent=True)
    host.offline_since = None
    outbox.record(session, clock=clock, project_id=ADMIN_PROJECT_ID, type="hostnode.online",
                  data={"hostnode_id": host.id})
    session.flush()
    return Beat(host.id, host.status, host.heartbeat_timeout_s)


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
        set_status(host, HostStatus(status), by_agent=False)
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


def get_hostnodes(session: Session, host_ids: Collection[str]) -> dict[str, Hostnode]:
    """The hostnodes of `host_ids` that exist, by id, in one query."""
    return {host.id: host for host in session.scalars(select(Hostnode).where(Hostnode.id.in_(host_ids)))}


def assignments(session: Session, *, host_ids: Collection[str]) -> dict[str, list[Instance]]:
    """Each host's instances that its agent runs or keeps (oldest first), for many hosts in one query."""
    found: dict[str, list[Instance]] = {host_id: [] for host_id in host_ids}
    for inst in session.scalars(select(Instance).where(Instance.hostnode_id.in_(host_ids),
                                                       Instance.status.in_([s.value for s in ASSIGNED]))
                                .order_by(Instance.created_at, Instance.id)):
        found[str(inst.hostnode_id)].append(inst)
    return found


__all__ = ["HostInfo", "Status", "register", "heartbeats", "assignments", "PRICE_FIELDS"]
