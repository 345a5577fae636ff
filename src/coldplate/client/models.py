"""Typed views of the API's objects. Unknown fields are kept, so newer servers stay readable."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Gpu(Model):
    type: str
    name: str
    count: int


class Instance(Model):
    id: str
    name: str
    project_id: str
    status: str
    status_reason: str | None = None
    failure_reason: str | None = None
    gpu: Gpu
    gpu_indices: list[int] = []
    vcpus: int
    memory_gb: int
    disk_gb: int
    hostnode_id: str | None = None
    region: str | None = None
    image: str
    labels: dict[str, str] = {}
    spot: bool = False
    price_per_hour: str
    ip: str | None = None
    ports: list[dict[str, int]] = []
    ssh_port: int | None = None
    ssh_command: str | None = None
    volumes: list[dict[str, Any]] = []
    cloud_init: dict[str, Any] | None = None
    created_at: str
    ready_at: str | None = None
    stopped_at: str | None = None
    terminated_at: str | None = None
    expires_at: str | None = None
    duration_hours: int | None = None
    budget_limit: str | None = None
    cost_so_far: str | None = None


class ExecResult(Model):
    exit_code: int
    stdout: str
    stderr: str


class InstanceEvent(Model):
    id: str
    type: str
    from_status: str | None = None
    to_status: str | None = None
    reason: str | None = None
    created_at: str


class Hostnode(Model):
    id: str
    name: str
    region: str
    status: str
    gpu: Gpu
    gpus_free: int
    prices: dict[str, str]
    location: dict[str, str] = {}
    sandbox: str | None = None  # bubblewrap, docker, none (no isolation), simulated
    enforced_limits: list[str] = []


class Availability(Model):
    region: str
    gpus_free: int
    hosts: int
    min_price_per_hour: str
    max_price_per_hour: str


class GpuType(Model):
    slug: str
    name: str
    vram_gb: int
    aliases: list[str]
    availability: list[Availability] = []


class Region(Model):
    slug: str
    name: str
    aliases: list[str]


class Offer(Model):
    hostnode_id: str
    hostnode_name: str
    region: str
    gpu: Gpu
    gpus_free: int
    price_per_hour: str
    location: dict[str, str] = {}
    sandbox: str | None = None


class Project(Model):
    id: str
    name: str
    created_at: str
    monthly_budget: str | None = None
    on_budget_exceeded: str | None = None


class ApiKey(Model):
    id: str
    name: str
    project_id: str
    scopes: list[str]
    created_at: str
    key: str | None = None  # only when created


class SshKey(Model):
    id: str
    name: str
    public_key: str
    created_at: str


class JoinToken(Model):
    id: str
    name: str
    created_at: str
    expires_at: str | None = None
    max_uses: int | None = None
    uses: int = 0
    revoked_at: str | None = None
    state: str = "active"  # active | expired | used_up | revoked
    token: str | None = None  # only when created


class LedgerEntry(Model):
    id: str
    instance_id: str
    kind: str
    period_start: str
    period_end: str
    seconds: int
    rate_per_hour: str
    amount: str
    gpu_type: str
    labels: dict[str, str] = {}


class CostGroup(Model):
    key: str
    seconds: int
    entries: int
    amount: str


class Costs(Model):
    month: str
    group_by: str
    groups: list[CostGroup]
    total: str


JSON = dict[str, Any]
