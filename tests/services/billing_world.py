"""A project, a host and instances driven through the real services, for the billing tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from coldplate.clock import FakeClock
from coldplate.db.tables import Hostnode, Instance, LedgerEntry
from coldplate.domain.lifecycle import Status
from coldplate.domain.pricing import format_micros
from coldplate.loops import meter
from coldplate.services import actions, hostnodes, instances, join_tokens, projects
from coldplate.services.instances import InstanceRequest
from coldplate.state import AppState
from tests.hosts import host_info

GPU_PER_HOUR = 3_600_000  # 1,000 µ$ a second for one GPU
DISK_GB_PER_HOUR = 36_000  # 20 GB: 720,000 µ$ an hour, 200 a second


class World:
    def __init__(self, state: AppState, clock: FakeClock, *, name: str = "billing", disk_price: int = DISK_GB_PER_HOUR,
                 gpus: int = 8) -> None:
        self.state, self.clock = state, clock
        with state.tx() as session:
            self.project_id = projects.create_project(session, clock=clock, name=name).id
            _, token = join_tokens.create(session, clock=clock, name=name)
            spec = host_info(f"{name}-host", gpus=gpus, vcpus=128, memory_gb=1024, disk_gb=8000, ports=(30000, 30999),
                             price=format_micros(GPU_PER_HOUR), spot=format_micros(GPU_PER_HOUR // 2),
                             disk_price=format_micros(disk_price))
            self.host_id = hostnodes.register(session, clock=clock, join_token=token, spec=spec, credential=None)[0].id

    def create(self, name: str, **fields: Any) -> str:
        with self.state.tx() as session:
            req = InstanceRequest(name=name, gpu="H100", disk_gb=20, hostnode_id=self.host_id, **fields)
            return instances.create(session, clock=self.clock, project_id=self.project_id, req=req).id

    def report(self, inst_id: str, status: str) -> None:
        with self.state.tx() as session:
            host = session.get(Hostnode, self.host_id)
            assert host is not None
            actions.report(session, clock=self.clock, host=host, inst=self._inst(session, inst_id),
                           status=Status(status))

    def act(self, inst_id: str, verb: str, **kwargs: Any) -> None:
        with self.state.tx() as session:
            getattr(actions, verb)(session, clock=self.clock, inst=self._inst(session, inst_id), **kwargs)

    def run(self, inst_id: str) -> None:
        """provisioning → starting → ready."""
        self.report(inst_id, "starting")
        self.report(inst_id, "ready")

    def stop(self, inst_id: str) -> None:
        self.act(inst_id, "stop")
        self.report(inst_id, "stopped")

    def terminate(self, inst_id: str) -> None:
        self.act(inst_id, "terminate")
        if self.instance(inst_id).status == "draining":
            self.report(inst_id, "stopped")

    def meter(self) -> int:
        return meter.run_once(self.state)

    def instance(self, inst_id: str) -> Instance:
        with self.state.read() as session:
            return self._inst(session, inst_id)

    def entries(self, inst_id: str | None = None) -> list[LedgerEntry]:
        with self.state.read() as session:
            query = select(LedgerEntry).where(LedgerEntry.project_id == self.project_id)
            if inst_id is not None:
                query = query.where(LedgerEntry.instance_id == inst_id)
            return list(session.scalars(query.order_by(LedgerEntry.period_start, LedgerEntry.kind)))

    @staticmethod
    def _inst(session: Any, inst_id: str) -> Instance:
        inst = session.get(Instance, inst_id)
        assert inst is not None
        return inst
