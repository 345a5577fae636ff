"""The synchronous SDK client."""

from __future__ import annotations

import time
from typing import Any, TypeVar

import httpx

from coldplate.client import models
from coldplate.client import operations as ops
from coldplate.client import webhooks as wh
from coldplate.client.errors import WaitTimeoutError, raise_for_problem

T = TypeVar("T")

WAIT_CHUNK_S = 30.0


class Client:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"})

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, op: ops.Op[T]) -> T:
        response = self._http.request(op.method, op.path, params=op.params or None, json=op.json,
                                      headers=op.headers or None)
        raise_for_problem(response)
        return op.parse(ops.body_of(response))

    def create_instance(self, *, idempotency_key: str | None = None, **fields: Any) -> models.Instance:
        return self._do(ops.create_instance(fields, idempotency_key))

    def list_instances(self, *, status: str | list[str] | None = None, label: dict[str, str] | None = None,
                       limit: int | None = None) -> list[models.Instance]:
        out: list[models.Instance] = []
        cursor: str | None = None
        while True:
            page, cursor = self._do(ops.list_instances_page(status, label, limit, cursor))
            out += page
            if cursor is None:
                return out

    def get_instance(self, ref: str) -> models.Instance:
        return self._do(ops.get_instance(ref))

    def update_instance(self, ref: str, *, name: str | None = None,
                        labels: dict[str, str] | None = None) -> models.Instance:
        return self._do(ops.update_instance(ref, name, labels))

    def stop_instance(self, ref: str, *, force: bool = False,
                            grace_seconds: int | None = None) -> models.Instance:
        return self._do(ops.action(ref, "stop", force, grace_seconds))

    def start_instance(self, ref: str) -> models.Instance:
        return self._do(ops.action(ref, "start"))

    def restart_instance(self, ref: str, *, force: bool = False) -> models.Instance:
        return self._do(ops.action(ref, "restart", force))

    def terminate_instance(self, ref: str, *, force: bool = False,
                           grace_seconds: int | None = None) -> models.Instance:
        return self._do(ops.action(ref, "terminate", force, grace_seconds))

    def wait_instance(self, ref: str, *, status: str = "ready", timeout: float = 60.0) -> models.Instance:
        deadline = time.monotonic() + timeout
        while True:
            chunk = max(0.0, min(WAIT_CHUNK_S, deadline - time.monotonic()))
            try:
                return self._do(ops.wait_instance(ref, status, chunk))
            except WaitTimeoutError:
                if time.monotonic() >= deadline:
                    raise

    def instance_events(self, ref: str) -> list[models.InstanceEvent]:
        return self._do(ops.instance_events(ref))

    def gpu_types(self) -> list[models.GpuType]:
        return self._do(ops.gpu_types())

    def regions(self) -> list[models.Region]:
        return self._do(ops.regions())

    def offers(self, *, gpu: str, gpu_count: int | None = None, region: str | None = None,
               spot: bool | None = None) -> list[models.Offer]:
        return self._do(ops.offers(gpu, gpu_count, region, spot))

    def hostnodes(self) -> list[models.Hostnode]:
        return self._do(ops.hostnodes())

    def get_hostnode(self, host_id: str) -> models.Hostnode:
        return self._do(ops.get_hostnode(host_id))

    def update_hostnode(self, host_id: str, *, status: str | None = None,
                        prices: dict[str, str] | None = None) -> models.Hostnode:
        return self._do(ops.update_hostnode(host_id, status, prices))

    def create_project(self, name: str) -> models.Project:
        return self._do(ops.create_project(name))

    def list_projects(self) -> list[models.Project]:
        return self._do(ops.list_projects())

    def create_key(self, project_id: str, name: str, scopes: list[str] | None = None) -> models.ApiKey:
        return self._do(ops.create_key(project_id, name, scopes))

    def list_keys(self, project_id: str) -> list[models.ApiKey]:
        return self._do(ops.list_keys(project_id))

    def delete_key(self, key_id: str) -> None:
        self._do(ops.delete_key(key_id))

    def create_join_token(self, name: str | None = None, *, expires_in_hours: float | None = None,
                          expires_at: str | None = None, max_uses: int | None = None) -> models.JoinToken:
        """A token for registering new hosts; its secret (`token`) is returned only here."""
        return self._do(ops.create_join_token(name, expires_in_hours, expires_at, max_uses))

    def list_join_tokens(self) -> list[models.JoinToken]:
        return self._do(ops.list_join_tokens())

    def get_join_token(self, token_id: str) -> models.JoinToken:
        return self._do(ops.get_join_token(token_id))

    def revoke_join_token(self, token_id: str) -> None:
        self._do(ops.revoke_join_token(token_id))

    def create_ssh_key(self, name: str, public_key: str) -> models.SshKey:
        return self._do(ops.create_ssh_key(name, public_key))

    def list_ssh_keys(self) -> list[models.SshKey]:
        return self._do(ops.list_ssh_keys())

    def delete_ssh_key(self, key_id: str) -> None:
        self._do(ops.delete_ssh_key(key_id))

    def exec_instance(self, ref: str, cmd: list[str] | str, *, timeout: float = 30) -> models.ExecResult:
        return self._do(ops.exec_instance(ref, cmd, timeout))

    def instance_logs(self, ref: str, *, tail: int = 100) -> str:
        return self._do(ops.instance_logs(ref, tail))

    def list_events(self, *, type: str | None = None, instance_id: str | None = None,
                    since: str | None = None) -> list[wh.Event]:
        """Every event of the project (all pages), oldest first."""
        out: list[wh.Event] = []
        cursor: str | None = None
        while True:
            page, cursor = self._do(wh.events_page(type, instance_id, since, cursor))
            out += page
            if cursor is None:
                return out

    def set_budget_limit(self, ref: str, budget_limit: str | None) -> models.Instance:
        """Set (a decimal string) or clear (None) an instance's budget limit."""
        return self._do(ops.set_budget_limit(ref, budget_limit))

    def extend_instance(self, ref: str, *, hours: int) -> models.Instance:
        return self._do(ops.extend_instance(ref, hours))

    def usage(self, *, instance_id: str | None = None, since: str | None = None, until: str | None = None,
              limit: int | None = None) -> list[models.LedgerEntry]:
        """Every ledger entry matching, oldest first (all pages)."""
        out: list[models.LedgerEntry] = []
        cursor: str | None = None
        while True:
            page, cursor = self._do(ops.usage_page(instance_id, since, until, limit, cursor))
            out += page
            if cursor is None:
                return out

    def create_webhook(self, url: str, *, event_types: list[str] | None = None, description: str | None = None,
                       enabled: bool | None = None) -> wh.Webhook:
        return self._do(wh.create_webhook(url, event_types, description, enabled))

    def list_webhooks(self) -> list[wh.Webhook]:
        return self._do(wh.list_webhooks())

    def get_webhook(self, webhook_id: str) -> wh.Webhook:
        return self._do(wh.get_webhook(webhook_id))

    def update_webhook(self, webhook_id: str, *, url: str | None = None, event_types: list[str] | None = None,
                       description: str | None = None, enabled: bool | None = None) -> wh.Webhook:
        return self._do(wh.update_webhook(webhook_id, {"url": url, "event_types": event_types,
                                                        "description": description, "enabled": enabled}))

    def delete_webhook(self, webhook_id: str) -> None:
        self._do(wh.delete_webhook(webhook_id))

    def rotate_webhook_secret(self, webhook_id: str) -> wh.Webhook:
        return self._do(wh.rotate_webhook_secret(webhook_id))

    def list_webhook_deliveries(self, webhook_id: str, *, status: str | None = None) -> list[wh.Delivery]:
        """Newest first, all pages."""
        out: list[wh.Delivery] = []
        cursor: str | None = None
        while True:
            page, cursor = self._do(wh.deliveries_page(webhook_id, status, cursor))
            out += page
            if cursor is None:
                return out

    def redeliver_webhook(self, webhook_id: str, delivery_id: str) -> wh.Delivery:
        return self._do(wh.redeliver(webhook_id, delivery_id))

    def costs(self, *, month: str | None = None, group_by: str | None = None) -> models.Costs:
        return self._do(ops.costs(month, group_by))

    def usage_csv(self, *, instance_id: str | None = None, since: str | None = None,
                  until: str | None = None) -> str:
        return self._do(ops.export_csv("/v1/usage", {"instance_id": instance_id, "since": since, "until": until,
                                                         "limit": 1000}))

    def costs_csv(self, *, month: str | None = None, group_by: str | None = None) -> str:
        return self._do(ops.export_csv("/v1/costs", {"month": month, "group_by": group_by}))

    def set_project_budget(self, project_id: str, *, monthly_budget: str | None,
                           on_budget_exceeded: str | None = None) -> models.Project:
        """monthly_budget None removes the budget; on_budget_exceeded: block_creates | stop_instances."""
        fields: dict[str, Any] = {"monthly_budget": monthly_budget}
        if on_budget_exceeded is not None:
            fields["on_budget_exceeded"] = on_budget_exceeded
        return self._do(ops.set_project_budget(project_id, fields))
