"""GPU types, regions, offers and hostnodes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from coldplate.api import responses
from coldplate.api.auth import require, state
from coldplate.api.problems import PROBLEM_RESPONSES, ApiProblem
from coldplate.api.responses import GpuTypeList, HostnodeList, HostnodeOut, OfferList, RegionList
from coldplate.api.schemas import HostnodePatch, Ref, gpu_view, hostnode_view
from coldplate.checked import SafeStr
from coldplate.domain import catalog, pricing
from coldplate.services import hostnodes
from coldplate.services import offers as offers_service
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)
reader = require("instances:read")


@router.get("/gpu-types", response_model=GpuTypeList)
def gpu_types(request: Request, _: Principal = Depends(reader)) -> dict[str, Any]:
    with state(request).read() as session:
        avail = offers_service.availability(session)
    data = []
    for gpu in catalog.GPU_TYPES:
        rows = [a for a in avail if a.gpu_type == gpu.slug]
        data.append({
            "slug": gpu.slug, "name": gpu.name, "vram_gb": gpu.vram_gb, "aliases": list(gpu.aliases),
            "availability": [{"region": a.region, "gpus_free": a.gpus_free, "hosts": a.hosts,
                              "min_price_per_hour": pricing.format_micros(a.min_price_micros),
                              "max_price_per_hour": pricing.format_micros(a.max_price_micros)} for a in rows],
        })
    return {"data": data}


@router.get("/regions", response_model=RegionList)
def regions(_: Principal = Depends(reader)) -> dict[str, Any]:
    return {"data": [{"slug": r.slug, "name": r.name, "aliases": list(r.aliases)} for r in catalog.REGIONS]}


@router.get("/offers", response_model=OfferList)
def offers(request: Request, _: Principal = Depends(reader), gpu: SafeStr = Query(min_length=1, max_length=100),
           gpu_count: int = Query(default=1, ge=1, le=64), region: SafeStr | None = Query(default=None, max_length=40),
           spot: bool = False, limit: int = Query(default=50, ge=1, le=100)) -> dict[str, Any]:
    """The `limit` best offers (cheapest first; see placement.rank), ranked among 4 × `limit` hosts."""
    gpu_type = catalog.resolve_gpu(gpu)
    if gpu_type is None:
        raise ApiProblem(422, "validation_error", f"unknown GPU type {gpu!r}", param="gpu")
    region_slug = None
    if region is not None:
        found = catalog.resolve_region(region)
        if found is None:
            raise ApiProblem(422, "validation_error", f"unknown region {region!r}", param="region")
        region_slug = found.slug
    count = 0 if gpu_type.slug == "cpu" else gpu_count
    with state(request).read() as session:
        found_offers = offers_service.offers(session, gpu_slug=gpu_type.slug, gpu_count=count,
                                             region=region_slug, spot=spot, limit=limit)
        data = [{
            "hostnode_id": o.host.id, "hostnode_name": o.host.name, "region": o.host.region,
            "location": {"city": o.host.city, "country": o.host.country},
            "gpu": gpu_view(o.host.gpu_type, count), "gpus_free": o.host.gpus_free,
            "price_per_hour": pricing.format_micros(o.price_micros), "spot": spot,
            "vcpus_free": o.host.vcpus - o.host.vcpus_used, "memory_gb_free": o.host.memory_gb - o.host.memory_gb_used,
            "disk_gb_free": o.host.disk_gb - o.host.disk_gb_used, "uptime_pct": o.host.uptime_pct,
            "sandbox": o.host.sandbox,
        } for o in found_offers]
    return {"data": data}


@router.get("/hostnodes", response_model=HostnodeList)
def list_hostnodes(request: Request, _: Principal = Depends(reader)) -> dict[str, Any]:
    with state(request).read() as session:
        return {"data": responses.rows(hostnodes.list_hostnodes(session), hostnode_view, HostnodeOut)}


@router.get("/hostnodes/{host_id}", response_model=HostnodeOut)
def get_hostnode(host_id: Ref, request: Request, _: Principal = Depends(reader)) -> dict[str, Any]:
    with state(request).read() as session:
        return hostnode_view(hostnodes.get_hostnode(session, host_id))


@router.patch("/hostnodes/{host_id}", response_model=HostnodeOut)
def patch_hostnode(host_id: Ref, body: HostnodePatch, request: Request,
                   _: Principal = Depends(require("admin"))) -> dict[str, Any]:
    app = state(request)

    def patch(session: Session) -> dict[str, Any]:
        host = hostnodes.update_hostnode(session, clock=app.clock, host_id=host_id, status=body.status,
                                         prices_micros=body.prices.micros() if body.prices else None)
        return hostnode_view(host)

    return app.transact(patch)
