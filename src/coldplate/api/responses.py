"""What every public route answers, as pydantic models: /openapi.json describes each response,
and the schemathesis test holds the answers to it.

Routes build their answers as dicts (the `*_view` functions) and name the model with
`response_model=`; the models keep fields they do not declare (`extra="allow"`), so a field a
view gains is answered before it is described, never silently dropped. Every stored string in an
answer is a `SafeStr`: a row that cannot be answered fails here, and lists skip it (`rows`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticSerializationError

from coldplate.checked import SafeStr

log = logging.getLogger(__name__)
Row = TypeVar("Row")


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


def rows(items: Iterable[Row], view: Callable[[Row], dict[str, Any]], model: type[Out]) -> list[dict[str, Any]]:
    """The views of `items` that fit `model`; a row that does not is logged with its id and left
    out, so one bad row cannot break a list for everyone."""
    kept = []
    for item in items:
        try:
            data = view(item)
            model.model_validate(data).model_dump_json()  # fits the schema, and can be encoded
        except (ValidationError, PydanticSerializationError, ValueError, KeyError, TypeError):
            log.exception("row skipped: it cannot be answered", extra={"row_id": getattr(item, "id", None)})
            continue
        kept.append(data)
    return kept


class GpuOut(Out):
    type: SafeStr
    name: SafeStr
    count: int


class PortOut(Out):
    internal_port: int
    external_port: int


class VolumeOut(Out):
    name: SafeStr
    mount_path: SafeStr
    readonly: bool


class InstanceOut(Out):
    id: SafeStr
    name: SafeStr
    project_id: SafeStr
    status: SafeStr
    status_reason: SafeStr | None
    failure_reason: SafeStr | None
    gpu: GpuOut
    gpu_indices: list[int]
    vcpus: int
    memory_gb: int
    disk_gb: int
    hostnode_id: SafeStr | None
    region: SafeStr | None
    image: SafeStr
    cmd: list[SafeStr] | None
    entrypoint: list[SafeStr] | None
    env: dict[SafeStr, SafeStr]
    labels: dict[SafeStr, SafeStr]
    spot: bool
    volumes: list[VolumeOut]
    cloud_init: dict[str, Any] | None
    price_per_hour: str
    max_price_per_hour: str | None
    ip: SafeStr | None
    ports: list[PortOut]
    ssh_port: int | None
    ssh_command: SafeStr | None
    exit_code: int | None
    exit_message: SafeStr | None
    created_at: str | None
    ready_at: str | None
    stopped_at: str | None
    terminated_at: str | None
    expires_at: str | None
    duration_hours: int | None
    budget_limit: str | None
    cost_so_far: str


class InstanceList(Out):
    data: list[InstanceOut]
    next_cursor: str | None


class EventOut(Out):
    id: str
    type: str
    from_status: str | None
    to_status: str | None
    reason: str | None
    data: dict[str, Any]
    created_at: str | None


class EventList(Out):
    data: list[EventOut]


class ExecOut(Out):
    exit_code: int
    stdout: SafeStr
    stderr: SafeStr


class MetricsOut(Out):
    data: list[dict[str, Any]]


class ProjectOut(Out):
    id: SafeStr
    name: SafeStr
    created_at: str | None
    monthly_budget: str | None
    on_budget_exceeded: Literal["block_creates", "stop_instances"] | None


class ProjectList(Out):
    data: list[ProjectOut]


class KeyOut(Out):
    id: SafeStr
    name: SafeStr
    project_id: SafeStr
    scopes: list[SafeStr]
    created_at: str | None


class KeyCreated(KeyOut):
    key: str


class KeyList(Out):
    data: list[KeyOut]


class JoinTokenOut(Out):
    id: SafeStr
    name: SafeStr
    created_at: str | None
    expires_at: str | None
    max_uses: int | None
    uses: int
    revoked_at: str | None
    state: Literal["active", "expired", "used_up", "revoked"]


class JoinTokenCreated(JoinTokenOut):
    token: str


class JoinTokenList(Out):
    data: list[JoinTokenOut]


class SshKeyOut(Out):
    id: SafeStr
    name: SafeStr
    public_key: SafeStr
    created_at: str | None


class SshKeyList(Out):
    data: list[SshKeyOut]


class AvailabilityOut(Out):
    region: str
    gpus_free: int
    hosts: int
    min_price_per_hour: str
    max_price_per_hour: str


class GpuTypeOut(Out):
    slug: str
    name: str
    vram_gb: int
    aliases: list[str]
    availability: list[AvailabilityOut]


class GpuTypeList(Out):
    data: list[GpuTypeOut]


class RegionOut(Out):
    slug: str
    name: str
    aliases: list[str]


class RegionList(Out):
    data: list[RegionOut]


class LocationOut(Out):
    city: SafeStr
    country: SafeStr


class OfferOut(Out):
    hostnode_id: SafeStr
    hostnode_name: SafeStr
    region: SafeStr
    location: LocationOut
    gpu: GpuOut
    gpus_free: int
    price_per_hour: str
    spot: bool
    vcpus_free: int
    memory_gb_free: int
    disk_gb_free: int
    uptime_pct: float


class OfferList(Out):
    data: list[OfferOut]


class HostnodeOut(Out):
    id: SafeStr
    name: SafeStr
    region: SafeStr
    location: LocationOut
    status: SafeStr
    gpu: GpuOut
    gpus_free: int
    gpu_uuids: list[SafeStr]
    vcpus: int
    vcpus_free: int
    memory_gb: int
    memory_gb_free: int
    disk_gb: int
    disk_gb_free: int
    port_range: list[int]
    ports_free: int
    prices: dict[str, str]
    uptime_pct: float
    last_heartbeat_at: str | None
    created_at: str | None


class HostnodeList(Out):
    data: list[HostnodeOut]


class Health(Out):
    status: Literal["ok"]


class WebhookOut(Out):
    id: SafeStr
    project_id: SafeStr
    url: SafeStr
    event_types: list[SafeStr]
    description: SafeStr
    enabled: bool
    disabled_reason: SafeStr | None
    failing_since: str | None
    previous_secret_expires_at: str | None
    created_at: str | None
    updated_at: str | None


class WebhookCreated(WebhookOut):
    secret: str


class WebhookList(Out):
    data: list[WebhookOut]


class DeliveryOut(Out):
    id: SafeStr
    webhook_id: SafeStr
    event_seq: int
    event_type: SafeStr
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_attempt_at: str | None
    http_status: int | None
    latency_ms: int | None
    response: SafeStr | None
    error: SafeStr | None
    next_attempt_at: str | None
    delivered_at: str | None
    created_at: str | None


class DeliveryList(Out):
    data: list[DeliveryOut]
    next_cursor: str | None


class ProjectEventOut(Out):
    """An outbox event as `GET /v1/events` and webhook deliveries carry it."""

    id: SafeStr
    seq: int
    type: SafeStr
    timestamp: str | None
    data: dict[str, Any]


class ProjectEventList(Out):
    data: list[ProjectEventOut]
    next_cursor: str | None


class UsageEntryOut(Out):
    id: SafeStr
    project_id: SafeStr
    instance_id: SafeStr
    kind: SafeStr
    period_start: str | None
    period_end: str | None
    seconds: int
    rate_per_hour: str
    amount: str
    gpu_type: SafeStr
    labels: dict[SafeStr, SafeStr]
    created_at: str | None


class UsageList(Out):
    data: list[UsageEntryOut]
    next_cursor: str | None


class CostGroupOut(Out):
    key: SafeStr
    seconds: int
    entries: int
    amount: str


class CostsOut(Out):
    month: str
    group_by: SafeStr
    currency: Literal["USD"]
    groups: list[CostGroupOut]
    total: str


# A route that answers CSV as well as JSON names this in `responses=` (the JSON schema comes from
# its response_model).
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}},
          "description": "JSON, or CSV with `Accept: text/csv` or `?format=csv`"},
}
