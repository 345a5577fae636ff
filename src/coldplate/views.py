"""The JSON views of stored objects that more than the API renders (webhook payloads carry the
instance exactly as `GET /v1/instances/{id}` shows it), so neither `api/` nor `loops/` owns them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from coldplate.clock import isoformat
from coldplate.db.tables import Instance
from coldplate.domain import catalog, pricing
from coldplate.services import billing


def gpu_view(slug: str, count: int) -> dict[str, Any]:
    """A GPU type the catalog no longer knows (a row older than the catalog) shows by its slug."""
    gpu = catalog.resolve_gpu(slug)
    return {"type": slug, "name": slug if gpu is None else gpu.name, "count": count}


def instance_view(inst: Instance, now: datetime | None = None) -> dict[str, Any]:
    """`now` prices the open billing segment into `cost_so_far`; without it only closed entries count."""
    ssh = f"ssh root@{inst.ip} -p {inst.ssh_port}" if inst.ip and inst.ssh_port else None
    return {
        "id": inst.id, "name": inst.name, "project_id": inst.project_id, "status": inst.status,
        "status_reason": inst.status_reason, "failure_reason": inst.failure_reason,
        "gpu": gpu_view(inst.gpu_type, inst.gpu_count), "gpu_indices": inst.gpu_indices, "vcpus": inst.vcpus,
        "memory_gb": inst.memory_gb, "disk_gb": inst.disk_gb, "hostnode_id": inst.hostnode_id,
        "region": inst.region, "image": inst.image, "cmd": inst.cmd, "entrypoint": inst.entrypoint,
        "env": inst.env, "labels": inst.labels, "spot": inst.spot, "volumes": inst.volumes,
        "cloud_init": inst.cloud_init,
        "price_per_hour": pricing.format_micros(inst.price_micros),
        "max_price_per_hour": None if inst.max_price_micros is None else pricing.format_micros(inst.max_price_micros),
        "ip": inst.ip, "ports": inst.ports, "ssh_port": inst.ssh_port, "ssh_command": ssh,
        "exit_code": inst.exit_code, "exit_message": inst.exit_message,
        "created_at": isoformat(inst.created_at), "ready_at": isoformat(inst.ready_at),
        "stopped_at": isoformat(inst.stopped_at), "terminated_at": isoformat(inst.terminated_at),
        "expires_at": isoformat(inst.expires_at),
        "duration_hours": inst.reserved_hours,
        "budget_limit": None if inst.budget_limit_micros is None else pricing.format_micros(inst.budget_limit_micros),
        "cost_so_far": pricing.format_micros(inst.billed_micros if now is None else billing.cost_so_far(inst, now)),
    }
