"""What can be placed right now: offers per hostnode and availability per GPU type and region."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coldplate.db.tables import Hostnode
from coldplate.domain import placement
from coldplate.domain.lifecycle import HostStatus
from coldplate.services import capacity
from coldplate.services.capacity import HostRow
from coldplate.services.instances import InstanceRequest, candidate_hosts, demand_on, price_on


@dataclass(frozen=True)
class Offer:
    host: HostRow
    price_micros: int


def offers(session: Session, *, gpu_slug: str, gpu_count: int, region: str | None, spot: bool,
           limit: int = 100) -> list[Offer]:
    req = InstanceRequest(name="offer", gpu=gpu_slug, gpu_count=gpu_count, spot=spot)
    hosts = candidate_hosts(session, gpu_slug=gpu_slug, gpu_count=gpu_count, region=region, hostnode_id=None,
                            spot=spot, limit=limit * 4)
    options = []
    by_id = {h.id: h for h in hosts}
    for host in hosts:
        demand = demand_on(host, req, gpu_count)
        options.append((capacity.snapshot(host, price_on(host, demand, spot)), demand))
    return [Offer(by_id[s.id], s.price_micros) for s, _ in placement.rank(options)[:limit]]


@dataclass(frozen=True)
class Availability:
    gpu_type: str
    region: str
    gpus_free: int
    hosts: int
    min_price_micros: int
    max_price_micros: int


def availability(session: Session) -> list[Availability]:
    rows = session.execute(
        select(Hostnode.gpu_type, Hostnode.region, func.sum(Hostnode.gpus_free), func.count(),
               func.min(Hostnode.gpu_price_micros), func.max(Hostnode.gpu_price_micros))
        .where(Hostnode.status == HostStatus.ONLINE.value).group_by(Hostnode.gpu_type, Hostnode.region)
        .order_by(Hostnode.gpu_type, Hostnode.region)
    ).all()
    return [Availability(g, r, int(free or 0), int(n), int(lo), int(hi)) for g, r, free, n, lo, hi in rows]
