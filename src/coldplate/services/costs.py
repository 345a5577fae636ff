"""Reading the ledger: usage (entries, paged) and costs of a month grouped by instance, GPU, day or label."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from coldplate.checked import clean_text, in_utc
from coldplate.clock import as_utc
from coldplate.db.tables import LedgerEntry
from coldplate.domain import billing
from coldplate.services.errors import InvalidInput

GROUPINGS = ("instance", "gpu", "day")


@dataclass(frozen=True)
class Group:
    key: str
    seconds: int
    amount_micros: int
    entries: int


def usage_page(session: Session, *, project_id: str | None, instance_id: str | None, since: datetime | None,
               until: datetime | None, limit: int, cursor: str | None) -> tuple[list[LedgerEntry], str | None]:
    """Entries whose period starts in [since, until), oldest first."""
    query = select(LedgerEntry)
    if project_id is not None:
        query = query.where(LedgerEntry.project_id == project_id)
    if instance_id is not None:
        query = query.where(LedgerEntry.instance_id == instance_id)
    if since is not None:
        query = query.where(LedgerEntry.period_start >= since)
    if until is not None:
        query = query.where(LedgerEntry.period_start < until)
    if cursor is not None:
        start, last_id = _decode(cursor)
        query = query.where(or_(LedgerEntry.period_start > start,
                                and_(LedgerEntry.period_start == start, LedgerEntry.id > last_id)))
    rows = list(session.scalars(query.order_by(LedgerEntry.period_start, LedgerEntry.id).limit(limit + 1)))
    next_cursor = _encode(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _encode(entry: LedgerEntry) -> str:
    raw = json.dumps([as_utc(entry.period_start).isoformat(), entry.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        start, last_id = json.loads(raw)
        if not isinstance(start, str) or not isinstance(last_id, str) or len(last_id) > 40:
            raise ValueError("not a cursor")
        # what the client sent back is checked like any input: clean text, an instant UTC can hold
        return in_utc(datetime.fromisoformat(clean_text(start))), clean_text(last_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is not one this API returned", param="cursor") from exc


def check_grouping(group_by: str) -> str:
    if group_by in GROUPINGS or (group_by.startswith("label:") and len(group_by) > len("label:")):
        return group_by
    raise InvalidInput("group_by must be instance, gpu, day or label:<key>", param="group_by")


def _key(entry: LedgerEntry, group_by: str) -> str:
    if group_by == "instance":
        return entry.instance_id
    if group_by == "gpu":
        return entry.gpu_type
    if group_by == "day":
        return as_utc(entry.period_start).date().isoformat()
    return str(entry.labels.get(group_by.removeprefix("label:"), ""))


def month_costs(session: Session, *, project_id: str | None, month: datetime,
                group_by: str) -> tuple[list[Group], int]:
    """The month's entries (by period start) summed per group, largest first, and their total."""
    query = select(LedgerEntry).where(LedgerEntry.period_start >= month,
                                      LedgerEntry.period_start < billing.next_month(month))
    if project_id is not None:
        query = query.where(LedgerEntry.project_id == project_id)
    seconds: dict[str, int] = defaultdict(int)
    amounts: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for entry in session.scalars(query.execution_options(yield_per=1000)):
        key = _key(entry, group_by)
        seconds[key] += entry.seconds
        amounts[key] += entry.amount_micros
        counts[key] += 1
    groups = [Group(k, seconds[k], amounts[k], counts[k]) for k in amounts]
    groups.sort(key=lambda g: (-g.amount_micros, g.key))
    return groups, sum(amounts.values())
