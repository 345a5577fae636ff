"""Creating and reading instances: catalog resolution, placement, allocation in one transaction."""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, and_, bindparam, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from coldplate.clock import Clock
from coldplate.db.tables import Hostnode, Instance
from coldplate.domain import catalog, placement, pricing
from coldplate.domain.lifecycle import Desired, HostStatus, Status
from coldplate.ids import new_id
from coldplate.services import capacity, outbox, spend, ssh_keys
from coldplate.services.capacity import HOSTNODES, HostRow
from coldplate.services.errors import InvalidInput, NameTaken, NoCapacity, NotFound

INSTANCES = cast(Table, Instance.__table__)
INSERT_INSTANCE = insert(INSTANCES)
ALL_NONE: dict[str, Any] = {column.name: None for column in INSTANCES.c}
UNREAD_BY_PLACEMENT = {"gpu_uuids", "agent_token_hash", "last_heartbeat_at", "offline_since", "created_at"}
CANDIDATES = 8  # cheapest hosts (by GPU price) ranked in full per placement attempt
MIN_VCPUS, MIN_MEMORY_GB = 2, 4  # the least an instance gets by default


@dataclass(frozen=True)
class PortRequest:
    internal_port: int
    external_port: int | None = None


@dataclass(frozen=True)
class VolumeRequest:
    name: str
    mount_path: str
    readonly: bool = False


@dataclass(frozen=True)
class InstanceRequest:
    name: str
    gpu: str
    gpu_count: int = 1
    vcpus: int | None = None
    memory_gb: int | None = None
    disk_gb: int = 20
    region: str | None = None
    hostnode_id: str | None = None
    image: str = "busybox"
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    ssh_keys: list[str] = field(default_factory=list)
    ssh_key_ids: list[str] = field(default_factory=list)
    ports: list[PortRequest] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    spot: bool = False
    max_price_micros: int | None = None
    duration_hours: int | None = None
    max_hours: float | None = None
    volumes: list[VolumeRequest] = field(default_factory=list)
    cloud_init: dict[str, Any] | None = None  # validated by the API schema; run by the agent on first boot
    budget_limit_micros: int | None = None


def demand_on(host: HostRow, req: InstanceRequest, gpu_count: int) -> placement.Demand:
    vcpus = req.vcpus or placement.default_share(host.vcpus, gpu_count, host.gpu_count, minimum=MIN_VCPUS)
    memory = req.memory_gb or placement.default_share(host.memory_gb, gpu_count, host.gpu_count,
                                                      minimum=MIN_MEMORY_GB)
    fixed = tuple(p.external_port for p in req.ports if p.external_port is not None)
    floating = 1 + sum(1 for p in req.ports if p.external_port is None)  # SSH + forwards
    return placement.Demand(gpu_count=gpu_count, vcpus=vcpus, memory_gb=memory, disk_gb=req.disk_gb,
                            ports=floating, fixed_ports=fixed)


def price_on(host: HostRow, demand: placement.Demand, spot: bool) -> int:
    return pricing.instance_price_micros(
        gpu_per_hour=host.spot_gpu_price_micros if spot else host.gpu_price_micros, gpu_count=demand.gpu_count,
        vcpu_per_hour=host.vcpu_price_micros, vcpus=demand.vcpus,
        memory_gb_per_hour=host.memory_gb_price_micros, memory_gb=demand.memory_gb,
        disk_gb_per_hour=host.disk_gb_price_micros, disk_gb=demand.disk_gb,
    )


def _resolve(req: InstanceRequest) -> tuple[catalog.GpuType, int, str | None]:
    gpu = catalog.resolve_gpu(req.gpu)
    if gpu is None:
        known = ", ".join(g.slug for g in catalog.GPU_TYPES)
        raise InvalidInput(f"unknown GPU type {req.gpu!r}; known: {known}", param="gpu")
    count = 0 if gpu.slug == "cpu" else req.gpu_count
    if gpu.slug != "cpu" and count < 1:
        raise InvalidInput("gpu_count must be at least 1", param="gpu_count")
    region: str | None = None
    if req.region is not None:
        found = catalog.resolve_region(req.region)
        if found is None:
            raise InvalidInput(f"unknown region {req.region!r}; known: na, eu, apac", param="region")
        region = found.slug
    return gpu, count, region


@functools.cache
def _candidate_query(*, by_region: bool, by_host: bool, spot: bool, limit: int) -> Any:
    """The candidate statement for one shape of request, built once (building costs as much as running it).

    Core rows, not ORM objects: placement only reads them, and a retry after a lost compare-and-set
    must see fresh values anyway."""
    h = HOSTNODES.c
    columns = [c for c in HOSTNODES.c if c.name not in UNREAD_BY_PLACEMENT]
    # vCPUs, memory and disk at least the least the request can take (a default share is never
    # below the minimum), so a candidate slot is not spent on a host that cannot take it.
    query = select(*columns).where(h.status == HostStatus.ONLINE.value, h.gpu_type == bindparam("gpu_slug"),
                                   h.gpus_free >= bindparam("gpu_count"),
                                   h.vcpus - h.vcpus_used >= bindparam("min_vcpus"),
                                   h.memory_gb - h.memory_gb_used >= bindparam("min_memory_gb"),
                                   h.disk_gb - h.disk_gb_used >= bindparam("disk_gb"))
    if by_region:
        query = query.where(h.region == bindparam("region"))
    if by_host:
        query = query.where(h.id == bindparam("hostnode_id"))
    price = h.spot_gpu_price_micros if spot else h.gpu_price_micros
    return query.order_by(price, h.gpus_free, h.uptime_pct.desc()).limit(limit)


def candidate_hosts(session: Session, *, gpu_slug: str, gpu_count: int, region: str | None,
                    hostnode_id: str | None, spot: bool, min_vcpus: int = 0, min_memory_gb: int = 0,
                    disk_gb: int = 0, limit: int = CANDIDATES) -> list[Row[Any]]:
    query = _candidate_query(by_region=region is not None, by_host=hostnode_id is not None, spot=spot, limit=limit)
    params = {"gpu_slug": gpu_slug, "gpu_count": gpu_count, "region": region, "hostnode_id": hostnode_id,
              "min_vcpus": min_vcpus, "min_memory_gb": min_memory_gb, "disk_gb": disk_gb}
    return list(session.connection().execute(query, {k: v for k, v in params.items() if v is not None}))


def _options(hosts: list[Row[Any]], req: InstanceRequest,
             gpu_count: int) -> list[tuple[placement.HostSnapshot, placement.Demand]]:
    """Each host's snapshot with the request's demand on it, within the request's max price."""
    options = []
    for host in hosts:
        demand = demand_on(host, req, gpu_count)
        price = price_on(host, demand, req.spot)
        if req.max_price_micros is None or price <= req.max_price_micros:
            options.append((capacity.snapshot(host, price), demand))
    return options


def create(session: Session, *, clock: Clock, project_id: str, req: InstanceRequest) -> Instance:
    gpu, gpu_count, region = _resolve(req)
    spend.check_create(session, clock=clock, project_id=project_id)
    if req.hostnode_id is not None and session.get(Hostnode, req.hostnode_id) is None:
        raise NotFound(f"hostnode {req.hostnode_id} not found", param="hostnode_id")
    if req.ssh_key_ids:
        stored = ssh_keys.resolve(session, project_id=project_id, key_ids=req.ssh_key_ids)
        req = replace(req, ssh_keys=[*req.ssh_keys, *(k for k in stored if k not in req.ssh_keys)])
    # The name's uniqueness is enforced by the partial unique index when the row is inserted.
    for _ in range(capacity.MAX_CAS_ATTEMPTS):
        hosts = candidate_hosts(session, gpu_slug=gpu.slug, gpu_count=gpu_count, region=region,
                                hostnode_id=req.hostnode_id, spot=req.spot, min_vcpus=req.vcpus or MIN_VCPUS,
                                min_memory_gb=req.memory_gb or MIN_MEMORY_GB, disk_gb=req.disk_gb)
        options = _options(hosts, req, gpu_count)
        by_id = {h.id: h for h in hosts}
        ranked = placement.rank(options)
        if not ranked:
            if not options:  # say what the hosts with the GPUs free lack (the query left them out)
                options = _options(candidate_hosts(session, gpu_slug=gpu.slug, gpu_count=gpu_count, region=region,
                                                   hostnode_id=req.hostnode_id, spot=req.spot), req, gpu_count)
            short = [lack for host_, demand_ in options if (lack := placement.shortfall(host_, demand_))]
            raise NoCapacity(_no_capacity_detail(session, gpu, gpu_count, region, req, short), param="gpu")
        choice, demand = ranked[0]
        host = by_id[choice.id]
        alloc = placement.allocate(choice, demand)
        if capacity.compare_and_set(session, host, {
            "gpus_used": sorted([*host.gpus_used, *alloc.gpu_indices]),
            "vcpus_used": host.vcpus_used + demand.vcpus,
            "memory_gb_used": host.memory_gb_used + demand.memory_gb,
            "disk_gb_used": host.disk_gb_used + demand.disk_gb,
            "ports_used": sorted([*host.ports_used, *alloc.ports]),
        }):
            return _insert(session, clock=clock, project_id=project_id, req=req, gpu=gpu, host=host,
                           demand=demand, alloc=alloc, price=choice.price_micros)
    raise NoCapacity("capacity changed too often while placing; retry", param="gpu")


def _insert(session: Session, *, clock: Clock, project_id: str, req: InstanceRequest, gpu: catalog.GpuType,
            host: HostRow, demand: placement.Demand, alloc: placement.Allocation, price: int) -> Instance:
    now = clock.now()
    floating = iter(alloc.ports)
    ssh_port = next(floating)
    ports = [{"internal_port": p.internal_port,
              "external_port": p.external_port if p.external_port is not None else next(floating)}
             for p in req.ports]
    values = dict(
        ALL_NONE, id=new_id("inst"), project_id=project_id, name=req.name, status=Status.PROVISIONING.value,
        desired=Desired.RUNNING.value, status_reason=None, failure_reason=None, restart_pending=False,
        gpu_type=gpu.slug, gpu_count=demand.gpu_count, gpu_indices=list(alloc.gpu_indices),
        vcpus=demand.vcpus, memory_gb=demand.memory_gb, disk_gb=demand.disk_gb, hostnode_id=host.id,
        region=host.region, image=req.image, cmd=req.cmd, entrypoint=req.entrypoint, env=dict(req.env),
        ssh_keys=list(req.ssh_keys), ports=ports,
        volumes=[{"name": v.name, "mount_path": v.mount_path, "readonly": v.readonly} for v in req.volumes],
        cloud_init=req.cloud_init, ssh_port=ssh_port, labels=dict(req.labels), spot=req.spot,
        max_price_micros=req.max_price_micros, price_micros=price, max_hours=req.max_hours,
        grace_seconds=60, force=False, ip=None, created_at=now, updated_at=now,
        expires_at=_expiry(now, req), budget_limit_micros=req.budget_limit_micros, budget_alerted=0,
        reserved_hours=req.duration_hours, seg_no=0, seg_billed_s=0, billed_micros=0, version=1,
    )
    try:  # a Core insert: the ORM's unit of work costs more than the rest of the placement
        session.connection().execute(INSERT_INSTANCE, values)
    except IntegrityError as exc:  # a concurrent create took the name
        raise NameTaken(f"an instance named {req.name!r} already exists", param="name") from exc
    inst = Instance(**values)
    make_transient_to_detached(inst)  # every column is set: the object is what a SELECT would load
    session.add(inst)
    outbox.record(session, clock=clock, project_id=project_id, instance_id=inst.id, type="instance.lifecycle",
                  from_status=None, to_status=Status.PROVISIONING.value, reason="user",
                  data={"hostnode_id": host.id})
    return inst


def _expiry(now: datetime, req: InstanceRequest) -> datetime | None:
    limits = [h for h in (req.duration_hours, req.max_hours) if h is not None]
    return now + timedelta(hours=min(limits)) if limits else None


def _check_name_free(session: Session, *, project_id: str, name: str, exclude_id: str | None = None) -> None:
    query = select(Instance.id).where(Instance.project_id == project_id, Instance.name == name,
                                      Instance.status != Status.TERMINATED.value)
    if exclude_id is not None:
        query = query.where(Instance.id != exclude_id)
    if session.scalars(query).first() is not None:
        raise NameTaken(f"an instance named {name!r} already exists", param="name")


def _no_capacity_detail(session: Session, gpu: catalog.GpuType, count: int, region: str | None,
                        req: InstanceRequest, short: list[str]) -> str:
    wanted = ("a cpu instance" if gpu.slug == "cpu" else f"{count}x {gpu.slug}") + (f" in {region}" if region else "")
    if short:  # the GPUs are there (or none are asked for); something else on those hosts is not
        hosts = "the hosts that could take it" if gpu.slug == "cpu" else "the hosts with those GPUs free"
        return f"no capacity for {wanted}: {hosts} lack {short[0]}"
    rows = session.execute(
        select(Hostnode.gpu_type, Hostnode.region, func.max(Hostnode.gpus_free))
        .where(Hostnode.status == HostStatus.ONLINE.value, Hostnode.gpus_free > 0)
        .group_by(Hostnode.gpu_type, Hostnode.region).order_by(Hostnode.gpu_type, Hostnode.region)
    ).all()
    offers = [f"{n}x {g} in {r}" for g, r, n in rows if g == gpu.slug] + \
             [f"{n}x {g} in {r}" for g, r, n in rows if g != gpu.slug]
    price = " at or under the max price" if req.max_price_micros is not None else ""
    if not offers:
        return f"no capacity for {wanted}{price}; no GPUs are free anywhere"
    return f"no capacity for {wanted}{price}; largest free on one node: " + ", ".join(offers[:8])


def get(session: Session, *, project_id: str | None, ref: str, for_update: bool = False) -> Instance:
    """By id or by the name of a live instance; `project_id` None means any project (admin).

    `for_update`: a writer's read. The row is locked (PostgreSQL; SQLite's writers are serialised
    already) and read fresh, before any hostnode is touched: instance before hostnode is the one lock
    order, so two writers of one instance queue instead of deadlocking or undoing each other.
    FOR NO KEY UPDATE (`key_share`): rows that only point at the instance (agent tasks) are not held up."""
    query = select(Instance).where(or_(Instance.id == ref,
                                       and_(Instance.name == ref, Instance.status != Status.TERMINATED.value)))
    if project_id is not None:
        query = query.where(Instance.project_id == project_id)
    query = query.order_by(Instance.created_at.desc()).limit(1)
    if for_update:
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
    inst = session.scalars(query).first()
    if inst is None:
        raise NotFound(f"instance {ref} not found", param="id")
    return inst


def lock(session: Session, instance_id: str) -> Instance | None:
    """The instance with id `instance_id`, locked and read fresh (see `get`), or None."""
    return session.get(Instance, instance_id, with_for_update={"key_share": True}, populate_existing=True)


def list_page(session: Session, *, project_id: str | None, statuses: list[str] | None,
              labels: dict[str, str], limit: int, cursor: str | None) -> tuple[list[Instance], str | None]:
    query = select(Instance)
    if project_id is not None:
        query = query.where(Instance.project_id == project_id)
    if statuses:
        query = query.where(Instance.status.in_(statuses))
    if cursor is not None:
        created, last_id = _decode_cursor(cursor)
        query = query.where(or_(Instance.created_at < created,
                                and_(Instance.created_at == created, Instance.id < last_id)))
    query = query.order_by(Instance.created_at.desc(), Instance.id.desc())
    if not labels:
        rows = list(session.scalars(query.limit(limit + 1)))
    else:  # JSON label matching is done here so it works the same on SQLite and PostgreSQL
        rows = []
        for inst in session.scalars(query.execution_options(yield_per=500)):
            if all(inst.labels.get(k) == v for k, v in labels.items()):
                rows.append(inst)
                if len(rows) > limit:
                    break
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _encode_cursor(inst: Instance) -> str:
    raw = json.dumps([inst.created_at.isoformat(), inst.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, last_id = json.loads(raw)
        return datetime.fromisoformat(created), str(last_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is not one this API returned", param="cursor") from exc


def update(session: Session, *, clock: Clock, inst: Instance, name: str | None,
           labels: dict[str, str] | None) -> Instance:
    if name is not None and name != inst.name:
        _check_name_free(session, project_id=inst.project_id, name=name, exclude_id=inst.id)
        inst.name = name
    if labels is not None:
        inst.labels = dict(labels)
    inst.updated_at = clock.now()
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent rename or create took the name after our check
        raise NameTaken(f"an instance named {name!r} already exists", param="name") from exc
    outbox.record(session, clock=clock, project_id=inst.project_id, instance_id=inst.id, type="instance.updated",
                  data={"name": inst.name, "labels": inst.labels})
    return inst
