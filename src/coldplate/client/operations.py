"""Each API operation once: the request it sends and how its answer is read.

`Client` and `AsyncClient` only differ in how they send; both take their operations from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from coldplate.client import models

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Op(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def body_of(response: httpx.Response) -> Any:
    """JSON when the server says JSON, else text (logs); None for an empty answer."""
    if not response.content:
        return None
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def one(model: type[M]) -> Callable[[Any], M]:
    return model.model_validate


def many(model: type[M]) -> Callable[[Any], list[M]]:
    return lambda body: [model.model_validate(item) for item in body["data"]]


def nothing(_: Any) -> None:
    return None


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def create_instance(fields: dict[str, Any], idempotency_key: str | None) -> Op[models.Instance]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Op("POST", "/v1/instances", one(models.Instance), json=_clean(fields), headers=headers)


def list_instances_page(status: str | list[str] | None, label: dict[str, str] | None, limit: int | None,
                        cursor: str | None) -> Op[tuple[list[models.Instance], str | None]]:
    statuses = ",".join(status) if isinstance(status, list) else status
    params = _clean({"status": statuses, "limit": limit, "cursor": cursor})
    if label:
        params["label"] = [f"{k}={v}" for k, v in label.items()]
    return Op("GET", "/v1/instances", lambda b: (many(models.Instance)(b), b.get("next_cursor")), params=params)


def get_instance(ref: str) -> Op[models.Instance]:
    return Op("GET", f"/v1/instances/{ref}", one(models.Instance))


def update_instance(ref: str, name: str | None, labels: dict[str, str] | None) -> Op[models.Instance]:
    return Op("PATCH", f"/v1/instances/{ref}", one(models.Instance), json=_clean({"name": name, "labels": labels}))


def action(ref: str, verb: str, force: bool = False, grace_seconds: int | None = None) -> Op[models.Instance]:
    body = _clean({"force": force or None, "grace_seconds": grace_seconds})
    return Op("POST", f"/v1/instances/{ref}/{verb}", one(models.Instance), json=body)


def wait_instance(ref: str, status: str, timeout: float) -> Op[models.Instance]:
    return Op("GET", f"/v1/instances/{ref}/wait", one(models.Instance), params={"status": status, "timeout": timeout})


def instance_events(ref: str) -> Op[list[models.InstanceEvent]]:
    return Op("GET", f"/v1/instances/{ref}/events", many(models.InstanceEvent))


def gpu_types() -> Op[list[models.GpuType]]:
    return Op("GET", "/v1/gpu-types", many(models.GpuType))


def regions() -> Op[list[models.Region]]:
    return Op("GET", "/v1/regions", many(models.Region))


def offers(gpu: str, gpu_count: int | None, region: str | None, spot: bool | None) -> Op[list[models.Offer]]:
    params = _clean({"gpu": gpu, "gpu_count": gpu_count, "region": region,
                     "spot": None if spot is None else str(spot).lower()})
    return Op("GET", "/v1/offers", many(models.Offer), params=params)


def hostnodes() -> Op[list[models.Hostnode]]:
    return Op("GET", "/v1/hostnodes", many(models.Hostnode))


def get_hostnode(host_id: str) -> Op[models.Hostnode]:
    return Op("GET", f"/v1/hostnodes/{host_id}", one(models.Hostnode))


def update_hostnode(host_id: str, status: str | None, prices: dict[str, str] | None) -> Op[models.Hostnode]:
    return Op("PATCH", f"/v1/hostnodes/{host_id}", one(models.Hostnode), json=_clean({"status": status,
                                                                                      "prices": prices}))


def create_project(name: str) -> Op[models.Project]:
    return Op("POST", "/v1/projects", one(models.Project), json={"name": name})


def list_projects() -> Op[list[models.Project]]:
    return Op("GET", "/v1/projects", many(models.Project))


def create_key(project_id: str, name: str, scopes: list[str] | None) -> Op[models.ApiKey]:
    return Op("POST", f"/v1/projects/{project_id}/keys", one(models.ApiKey),
              json=_clean({"name": name, "scopes": scopes}))


def list_keys(project_id: str) -> Op[list[models.ApiKey]]:
    return Op("GET", f"/v1/projects/{project_id}/keys", many(models.ApiKey))


def delete_key(key_id: str) -> Op[None]:
    return Op("DELETE", f"/v1/keys/{key_id}", nothing)


def create_join_token(name: str | None, expires_in_hours: float | None, expires_at: str | None,
                      max_uses: int | None) -> Op[models.JoinToken]:
    return Op("POST", "/v1/join-tokens", one(models.JoinToken), json=_clean({
        "name": name, "expires_in_hours": expires_in_hours, "expires_at": expires_at, "max_uses": max_uses}))


def list_join_tokens() -> Op[list[models.JoinToken]]:
    return Op("GET", "/v1/join-tokens", many(models.JoinToken))


def get_join_token(token_id: str) -> Op[models.JoinToken]:
    return Op("GET", f"/v1/join-tokens/{token_id}", one(models.JoinToken))


def revoke_join_token(token_id: str) -> Op[None]:
    return Op("DELETE", f"/v1/join-tokens/{token_id}", nothing)


def create_ssh_key(name: str, public_key: str) -> Op[models.SshKey]:
    return Op("POST", "/v1/ssh-keys", one(models.SshKey), json={"name": name, "public_key": public_key})


def list_ssh_keys() -> Op[list[models.SshKey]]:
    return Op("GET", "/v1/ssh-keys", many(models.SshKey))


def delete_ssh_key(key_id: str) -> Op[None]:
    return Op("DELETE", f"/v1/ssh-keys/{key_id}", nothing)


def exec_instance(ref: str, cmd: list[str] | str, timeout: float) -> Op[models.ExecResult]:
    return Op("POST", f"/v1/instances/{ref}/exec", one(models.ExecResult), json={"cmd": cmd, "timeout": timeout})


def instance_logs(ref: str, tail: int) -> Op[str]:
    return Op("GET", f"/v1/instances/{ref}/logs", str, params={"tail": tail})


def set_budget_limit(ref: str, budget_limit: str | None) -> Op[models.Instance]:
    """PATCH with an explicit null clears the limit, so this body is not cleaned of None."""
    return Op("PATCH", f"/v1/instances/{ref}", one(models.Instance), json={"budget_limit": budget_limit})


def extend_instance(ref: str, hours: int) -> Op[models.Instance]:
    return Op("POST", f"/v1/instances/{ref}/extend", one(models.Instance), json={"hours": hours})


def usage_page(instance_id: str | None, since: str | None, until: str | None, limit: int | None,
               cursor: str | None) -> Op[tuple[list[models.LedgerEntry], str | None]]:
    params = _clean({"instance_id": instance_id, "since": since, "until": until, "limit": limit, "cursor": cursor})
    return Op("GET", "/v1/usage", lambda b: (many(models.LedgerEntry)(b), b.get("next_cursor")), params=params)


def costs(month: str | None, group_by: str | None) -> Op[models.Costs]:
    return Op("GET", "/v1/costs", one(models.Costs), params=_clean({"month": month, "group_by": group_by}))


def export_csv(path: str, params: dict[str, Any]) -> Op[str]:
    """/v1/usage or /v1/costs as CSV text."""
    return Op("GET", path, str, params={**_clean(params), "format": "csv"})


def set_project_budget(project_id: str, fields: dict[str, Any]) -> Op[models.Project]:
    """`fields` as given: `monthly_budget: None` removes the budget."""
    return Op("PATCH", f"/v1/projects/{project_id}", one(models.Project), json=fields)
