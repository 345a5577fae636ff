"""Billing: usage (ledger entries), monthly costs, and extending a reservation.

Usage and costs need `billing:read` and answer JSON, or CSV with `Accept: text/csv` or `?format=csv`.
Project budgets are set with the other project routes (routes_admin.py)."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field
from sqlalchemy.orm import Session

from coldplate.api import responses
from coldplate.api.auth import require, scoped_project, state
from coldplate.api.problems import PROBLEM_RESPONSES, ApiProblem
from coldplate.api.query import Cursor, Since, Until
from coldplate.api.responses import CSV_RESPONSE, CostsOut, InstanceOut, UsageEntryOut, UsageList
from coldplate.api.schemas import Ref, Strict, instance_view
from coldplate.checked import SafeStr
from coldplate.clock import isoformat
from coldplate.db.tables import LedgerEntry
from coldplate.domain import billing, pricing
from coldplate.services import billing as billing_service
from coldplate.services import costs, instances
from coldplate.services.billing import MAX_RESERVED_HOURS
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)
billing_reader = require("billing:read")
writer = require("instances:write")

USAGE_COLUMNS = ("id", "instance_id", "kind", "period_start", "period_end", "seconds", "rate_per_hour", "amount",
                 "gpu_type", "labels")


class ExtendIn(Strict):
    hours: int = Field(ge=1, le=MAX_RESERVED_HOURS)


def entry_view(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id, "project_id": entry.project_id, "instance_id": entry.instance_id, "kind": entry.kind,
        "period_start": isoformat(entry.period_start), "period_end": isoformat(entry.period_end),
        "seconds": entry.seconds, "rate_per_hour": pricing.format_micros(entry.rate_micros),
        "amount": pricing.format_micros(entry.amount_micros), "gpu_type": entry.gpu_type, "labels": entry.labels,
        "created_at": isoformat(entry.created_at),
    }


def _wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    return "text/csv" in request.headers.get("accept", "")


def _csv(header: list[str], rows: list[list[Any]], filename: str) -> Response:
    buffer = io.StringIO()
    writer_ = csv.writer(buffer, lineterminator="\n")
    writer_.writerow(header)
    writer_.writerows(rows)
    return Response(buffer.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/usage", response_model=UsageList, responses=CSV_RESPONSE)
def usage(request: Request, principal: Principal = Depends(billing_reader),
          instance_id: SafeStr | None = Query(default=None, max_length=63), since: Since = None,
          until: Until = None, limit: int = Query(default=100, ge=1, le=1000), cursor: Cursor = None,
          format: Literal["json", "csv"] | None = None) -> Any:
    app = state(request)
    with app.read() as session:
        project_id = scoped_project(principal)
        if instance_id is not None:  # by id or name, and only within the caller's project
            instance_id = instances.get(session, project_id=project_id, ref=instance_id).id
        rows, next_cursor = costs.usage_page(session, project_id=project_id, instance_id=instance_id,
                                             since=since, until=until, limit=limit, cursor=cursor)
        views = responses.rows(rows, entry_view, UsageEntryOut)
    if _wants_csv(request, format):
        return _csv(list(USAGE_COLUMNS), [[v[c] if c != "labels" else ";".join(f"{k}={x}" for k, x in
                                                                              sorted(v["labels"].items()))
                                           for c in USAGE_COLUMNS] for v in views], "usage.csv")
    return {"data": views, "next_cursor": next_cursor}


@router.get("/costs", response_model=CostsOut, responses=CSV_RESPONSE)
def month_costs(request: Request, principal: Principal = Depends(billing_reader),
                month: SafeStr | None = Query(default=None, max_length=7),
                group_by: Annotated[SafeStr, Query(max_length=200)] = "instance",
                format: Literal["json", "csv"] | None = None) -> Any:
    app = state(request)
    try:
        start = billing.parse_month(month) if month is not None else billing.month_start(app.clock.now())
    except ValueError as exc:
        raise ApiProblem(422, "validation_error", str(exc), param="month") from exc
    costs.check_grouping(group_by)
    with app.read() as session:
        groups, total = costs.month_costs(session, project_id=scoped_project(principal), month=start,
                                          group_by=group_by)
    key = billing.month_key(start)
    if _wants_csv(request, format):
        rows: list[list[Any]] = [[g.key, g.seconds, pricing.format_micros(g.amount_micros)] for g in groups]
        rows.append(["total", sum(g.seconds for g in groups), pricing.format_micros(total)])
        return _csv([group_by, "seconds", "amount"], rows, f"costs-{key}.csv")
    return {"month": key, "group_by": group_by, "currency": "USD",
            "groups": [{"key": g.key, "seconds": g.seconds, "entries": g.entries,
                        "amount": pricing.format_micros(g.amount_micros)} for g in groups],
            "total": pricing.format_micros(total)}


@router.post("/instances/{ref}/extend", response_model=InstanceOut)
def extend(ref: Ref, body: ExtendIn, request: Request, principal: Principal = Depends(writer)) -> dict[str, Any]:
    """In `transact`, the instance locked first (the one lock order): a lost race or a deadlock
    with the meter or an agent's report is retried, not a 500."""
    app = state(request)

    def extend_(session: Session) -> dict[str, Any]:
        inst = instances.get(session, project_id=scoped_project(principal), ref=ref, for_update=True)
        billing_service.extend(session, clock=app.clock, inst=inst, hours=body.hours)
        return instance_view(inst, app.clock.now())

    return app.transact(extend_)
