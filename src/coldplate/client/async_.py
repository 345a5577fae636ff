"""The asynchronous SDK client: the same methods as `Client`, as coroutines."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import httpx

from coldplate.client import models
from coldplate.client import operations as ops
from coldplate.client import webhooks as wh
from coldplate.client.errors import WaitTimeoutError, raise_for_problem

T = TypeVar("T")

WAIT_CHUNK_S = 30.0


class AsyncClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"})

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _do(self, op: ops.Op[T]) -> T:
        response = await self._http.request(op.method, op.path, params=op.params or None, json=op.json,
                                            headers=op.headers or None)
        raise_for_problem(response)
        return op.parse(ops.body_of(response))

    async def create_instance(self, *, idempotency_key: str | None = None, **fields: Any) -> models.Instance:
        return await self._do(ops.create_instance(fields, idempotency_key))

    async def list_instances(self, *, status: str | list[str] | None = None, label: dict[str, str] | None = None,
                       limit: int | None = None) -> list[models.Instance]:
        out: list[models.Instance] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._do(ops.list_instances_page(status, label, limit, cursor))
            out += page
            if cursor is None:
                return out

    async def get_instance(self, ref: str) -> models.Instance:
        return await self._do(ops.get_instance(ref))

    async def update_instance(self, ref: str, *, name: str | None = None,
                        labels: dict[str, str] | None = None) -> models.Instance:
        return await self._do(ops.update_instance(ref, name, labels))

    async def stop_instance(self, ref: str, *, force: bool = False,
                            grace_seconds: int | None = None) -> models.Instance:
        return await self._do(ops.action(ref, "stop", force, grace_seconds))

    async def start_instance(self, ref: str) -> models.Instance:
        return await self._do(ops.action(ref, "start"))

    async def restart_instance(self, ref: str, *, force: bool = False) -> models.Instance:
        return await self._do(ops.action(ref, "restart", force))

    async def terminate_instance(self, ref: str, *, force: bool = False,
                           grace_seconds: int | None = None) -> models.Instance:
        return await self._do(ops.action(ref, "terminate", force, grace_seconds))

    async def wait_instance(self, ref: str, *, status: str = "ready", timeout: float = 60.0) -> models.Instance:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            chunk = max(0.0, min(WAIT_CHUNK_S, deadline - asyncio.get_running_loop().time()))
            try:
                return await self._do(ops.wait_instance(ref, status, chunk))
            except WaitTimeoutError:
                if asyncio.get_running_loop().time() >= deadline:
                    raise

    async def instance_events(self, ref: str) -> list[models.InstanceEvent]:
        return await self._do(ops.instance_events(ref))

    async def gpu_types(self) -> list[models.GpuType]:
        return await self._do(ops.gpu_types())

    async def regions(self) -> list[models.Region]:
        return await self._do(ops.regions())

    async def offers(self, *, gpu: str, gpu_count: int | None = None, region: str | None = None,
               spot: bool | None = None) -> list[models.Offer]:
        return await self._do(ops.offers(gpu, gpu_count, region, spot))

    async def hostnodes(self) -> list[models.Hostnode]:
        return await self._do(ops.hostnodes())

    async def get_hostnode(self, host_id: str) -> models.Hostnode:
        return await self._do(ops.get_hostnode(host_id))

    async def update_hostnode(self, host_id: str, *, status: str | None = None,
                        prices: dict[str, str] | None = None) -> models.Hostnode:
        return await self._do(ops.update_hostnode(host_id, status, prices))

    async def create_project(self, name: str) -> models.Project:
        return await self._do(ops.create_project(name))

    async def list_projects(self) -> list[models.Project]:
        return await self._do(ops.list_projects())

    async def create_key(self, project_id: str, name: str, scopes: list[str] | None = None) -> models.ApiKey:
        return await self._do(ops.create_key(project_id, name, scopes))

    async def list_keys(self, project_id: str) -> list[models.ApiKey]:
        return await self._do(ops.list_keys(project_id))

    async def delete_key(self, key_id: str) -> None:
        await self._do(ops.delete_key(key_id))

    async def create_join_token(self, name: str | None = None, *, expires_in_hours: float | None = None,
                                expires_at: str | None = None, max_uses: int | None = None) -> models.JoinToken:
        """A token for registering new hosts; its secret (`token`) is returned only here."""
        return await self._do(ops.create_join_token(name, expires_in_hours, expires_at, max_uses))

    async def list_join_tokens(self) -> list[models.JoinToken]:
        return await self._do(ops.list_join_tokens())

    async def get_join_token(self, token_id: str) -> models.JoinToken:
        return await self._do(ops.get_join_token(token_id))

    async def revoke_join_token(self, token_id: str) -> None:
        await self._do(ops.revoke_join_token(token_id))

    async def create_ssh_key(self, name: str, public_key: str) -> models.SshKey:
        return await self._do(ops.create_ssh_key(name, public_key))

    async def list_ssh_keys(self) -> list[models.SshKey]:
        return await self._do(ops.list_ssh_keys())

    async def delete_ssh_key(self, key_id: str) -> None:
        await self._do(ops.delete_ssh_key(key_id))

    async def exec_instance(self, ref: str, cmd: list[str] | str, *, timeout: float = 30) -> models.ExecResult:
        return await self._do(ops.exec_instance(ref, cmd, timeout))

    async def instance_logs(self, ref: str, *, tail: int = 100) -> str:
        return await self._do(ops.instance_logs(ref, tail))

    async def list_events(self, *, type: str | None = None, instance_id: str | None = None,
                          since: str | None = None) -> list[wh.Event]:
        """Every event of the project (all pages), oldest first."""
        out: list[wh.Event] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._do(wh.events_page(type, instance_id, since, cursor))
            out += page
            if cursor is None:
                return out

    async def set_budget_limit(self, ref: str, budget_limit: str | None) -> models.Instance:
        """Set (a decimal string) or clear (None) an instance's budget limit."""
        return await self._do(ops.set_budget_limit(ref, budget_limit))

    async def extend_instance(self, ref: str, *, hours: int) -> models.Instance:
        return await self._do(ops.extend_instance(ref, hours))

    async def usage(self, *, instance_id: str | None = None, since: str | None = None, until: str | None = None,
              limit: int | None = None) -> list[models.LedgerEntry]:
        """Every ledger entry matching, oldest first (all pages)."""
        out: list[models.LedgerEntry] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._do(ops.usage_page(instance_id, since, until, limit, cursor))
            out += page
            if cursor is None:
                return out

    async def create_webhook(self, url: str, *, event_types: list[str] | None = None,
                             description: str | None = None, enabled: bool | None = None) -> wh.Webhook:
        return await self._do(wh.create_webhook(url, event_types, description, enabled))

    async def list_webhooks(self) -> list[wh.Webhook]:
        return await self._do(wh.list_webhooks())

    async def get_webhook(self, webhook_id: str) -> wh.Webhook:
        return await self._do(wh.get_webhook(webhook_id))

    async def update_webhook(self, webhook_id: str, *, url: str | None = None,
                             event_types: list[str] | None = None, description: str | None = None,
                             enabled: bool | None = None) -> wh.Webhook:
        return await self._do(wh.update_webhook(webhook_id, {"url": url, "event_types": event_types,
                                                              "description": description, "enabled": enabled}))

    async def delete_webhook(self, webhook_id: str) -> None:
        await self._do(wh.delete_webhook(webhook_id))

    async def rotate_webhook_secret(self, webhook_id: str) -> wh.Webhook:
        return await self._do(wh.rotate_webhook_secret(webhook_id))

    async def list_webhook_deliveries(self, webhook_id: str, *, status: str | None = None) -> list[wh.Delivery]:
        """Newest first, all pages."""
        out: list[wh.Delivery] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._do(wh.deliveries_page(webhook_id, status, cursor))
            out += page
            if cursor is None:
                return out

    async def redeliver_webhook(self, webhook_id: str, delivery_id: str) -> wh.Delivery:
        return await self._do(wh.redeliver(webhook_id, delivery_id))

    async def costs(self, *, month: str | None = None, group_by: str | None = None) -> models.Costs:
        return await self._do(ops.costs(month, group_by))

    async def usage_csv(self, *, instance_id: str | None = None, since: str | None = None,
                  until: str | None = None) -> str:
        return await self._do(ops.export_csv("/v1/usage", {"instance_id": instance_id, "since": since, "until": until,
                                                         "limit": 1000}))

    async def costs_csv(self, *, month: str | None = None, group_by: str | None = None) -> str:
        return await self._do(ops.export_csv("/v1/costs", {"month": month, "group_by": group_by}))

    async def set_project_budget(self, project_id: str, *, monthly_budget: str | None,
                           on_budget_exceeded: str | None = None) -> models.Project:
        """monthly_budget None removes the budget; on_budget_exceeded: block_creates | stop_instances."""
        fields: dict[str, Any] = {"monthly_budget": monthly_budget}
        if on_budget_exceeded is not None:
            fields["on_budget_exceeded"] = on_budget_exceeded
        return await self._do(ops.set_project_budget(project_id, fields))
