"""Allocation state of hostnodes, changed only by compare-and-set on `generation`.

Two writers that read the same generation cannot both commit: the second update matches no row
and retries on a fresh read. That is what guarantees no GPU or port is ever given twice, on
SQLite (where writes are serialised anyway) and on PostgreSQL under READ COMMITTED.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, select, update
from sqlalchemy.orm import Session

from coldplate.db.tables import Hostnode
from coldplate.domain.placement import HostSnapshot
from coldplate.services import signals
from coldplate.services.errors import Contention

MAX_CAS_ATTEMPTS = 50
HOSTNODES = cast(Table, Hostnode.__table__)
# A hostnode as an ORM object or as a Core row (placement's hot path): both are read by column name.
HostRow = Hostnode | Row[Any]


class CasFailed(Contention):
    """A hostnode's allocation kept changing under us: a 409 `contention`, never a 500."""


def fresh_host(session: Session, host_id: str) -> Hostnode | None:
    return session.scalars(
        select(Hostnode).where(Hostnode.id == host_id).execution_options(populate_existing=True)
    ).first()


def snapshot(host: HostRow, price_micros: int) -> HostSnapshot:
    return HostSnapshot(
        id=host.id, gpu_count=host.gpu_count, gpus_used=frozenset(host.gpus_used),
        vcpus=host.vcpus, vcpus_used=host.vcpus_used, memory_gb=host.memory_gb,
        memory_gb_used=host.memory_gb_used, disk_gb=host.disk_gb, disk_gb_used=host.disk_gb_used,
        port_lo=host.port_lo, port_hi=host.port_hi, ports_used=frozenset(host.ports_used),
        price_micros=price_micros, uptime_pct=host.uptime_pct,
    )


@functools.cache
def _cas_statement(columns: tuple[str, ...]) -> Any:
    """A table-level UPDATE (the ORM's bulk-update machinery costs 2x here), built once per column set."""
    h = HOSTNODES.c
    return (update(HOSTNODES)
            .where(h.id == bindparam("host_id"), h.generation == bindparam("seen_generation"))
            .values(generation=h.generation + 1, assignment_version=h.assignment_version + 1,
                    **{column: bindparam(column) for column in columns}))


def compare_and_set(session: Session, host: HostRow, values: dict[str, Any]) -> bool:
    """Write allocation `values` if nobody changed the host since we read it."""
    if "gpus_used" in values:
        values["gpus_free"] = host.gpu_count - len(values["gpus_used"])
    params = {**values, "host_id": host.id, "seen_generation": host.generation}
    result = session.connection().execute(_cas_statement(tuple(sorted(values))), params)
    ok = bool(result.rowcount == 1)
    if ok:
        signals.touch(session, host.id)
    return ok


def mutate(session: Session, host_id: str, change: Callable[[Hostnode], dict[str, Any] | None]) -> None:
    """Apply `change` (fresh host → new allocation values, or None for no change) with CAS retries."""
    for _ in range(MAX_CAS_ATTEMPTS):
        host = fresh_host(session, host_id)
        if host is None:
            return
        values = change(host)
        if values is None or compare_and_set(session, host, values):
            return
    raise CasFailed(f"hostnode {host_id} is busy with other requests; try again", param="hostnode_id")


def bump_assignments(session: Session, host_id: str) -> None:
    session.execute(
        update(Hostnode).where(Hostnode.id == host_id)
        .values(assignment_version=Hostnode.assignment_version + 1)
        .execution_options(synchronize_session=False)
    )
    signals.touch(session, host_id)
