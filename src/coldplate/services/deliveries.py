"""Webhook deliveries: fan-out from the outbox, claim under a lease, record each attempt.

The lease is the one of `services/leases.py` (which rows are free is `leases.free`): claim rows
with `FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite has one writer), stamp `lease_owner` and
`lease_expires_at`, commit, call out with no transaction open, then write the result with an
update guarded by the owner. The claim and the record are written here rather than with
`leases.claim`/`leases.finish` because a round claims in due order with its webhooks joined and
records a whole round in one transaction. A dispatcher that dies mid-call leaves a lease that expires; the
delivery is then sent again under the same `webhook-id` (at least once)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from coldplate.clock import Clock, as_utc
from coldplate.db.tables import Event, Webhook, WebhookDelivery
from coldplate.domain import webhook_retry
from coldplate.ids import new_id
from coldplate.services import events, leases, webhooks
from coldplate.services.errors import InvalidState, NotFound

DELIVERIES = cast(Table, WebhookDelivery.__table__)
RESPONSE_EXCERPT = 1024


@dataclass(frozen=True)
class Job:
    """A claimed delivery: everything the sender needs, read before the transaction ends."""

    delivery_id: str
    webhook_id: str
    url: str
    body: str
    secrets: list[str]
    attempt: int


@dataclass(frozen=True)
class Outcome:
    status_code: int | None  # None: no HTTP answer (refused destination, timeout, connection error)
    latency_ms: int
    response: str = ""
    error: str | None = None


def fan_out(session: Session, *, clock: Clock, limit: int = 500) -> int:
    """Turn events not yet fanned out into one delivery per matching enabled webhook, and mark the
    events, in the caller's transaction. Returns how many events were taken (not deliveries)."""
    taken = list(session.scalars(select(Event).where(Event.delivered_at.is_(None)).order_by(Event.seq)
                                 .limit(limit).with_for_update(skip_locked=True)))
    if not taken:
        return 0
    project_ids = {e.project_id for e in taken}
    hooks = list(session.scalars(select(Webhook).where(Webhook.project_id.in_(project_ids),
                                                        Webhook.enabled.is_(True))))
    now = clock.now()
    rows: list[dict[str, Any]] = []
    matched = [(e, [h for h in hooks if _matches(h, e)]) for e in taken]
    wanted = [e for e, hs in matched if hs]
    bodies = {p["seq"]: events.body(p) for p in events.render_all(session, wanted)} if wanted else {}
    for event, targets in matched:
        for hook in targets:
            rows.append({"id": new_id("msg"), "webhook_id": hook.id, "event_seq": event.seq,
                         "event_type": event.type, "body": bodies[event.seq], "status": "pending", "attempts": 0,
                         "next_attempt_at": now, "created_at": now})
    if rows:
        session.connection().execute(insert(DELIVERIES), rows)
    session.execute(update(Event).where(Event.seq.in_([e.seq for e in taken])).values(delivered_at=now))
    return len(taken)


def _matches(hook: Webhook, event: Event) -> bool:
    return (hook.project_id == event.project_id and as_utc(event.created_at) >= as_utc(hook.created_at)
            and (not hook.event_types or event.type in hook.event_types))


def claim(session: Session, *, clock: Clock, owner: str, limit: int, lease: timedelta) -> list[Job]:
    now = clock.now()
    rows = list(session.scalars(
        select(WebhookDelivery).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
               leases.free(WebhookDelivery, now),
               Webhook.enabled.is_(True))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.event_seq).limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDelivery)))
    if not rows:
        return []
    hooks = {h.id: h for h in session.scalars(select(Webhook).where(Webhook.id.in_({r.webhook_id for r in rows})))}
    jobs = []
    for row in rows:
        row.lease_owner = owner
        row.lease_expires_at = now + lease
        hook = hooks[row.webhook_id]
        jobs.append(Job(delivery_id=row.id, webhook_id=hook.id, url=hook.url, body=row.body,
                        secrets=webhooks.signing_secrets(hook, now), attempt=row.attempts + 1))
    session.flush()
    return jobs


def record(session: Session, *, clock: Clock, owner: str, job: Job, outcome: Outcome,
           rng: random.Random | None = None) -> bool:
    """Write one attempt's outcome if this dispatcher still holds the lease; False if it lost it
    (the lease expired and another took the delivery: its result is the one that counts)."""
    return not record_all(session, clock=clock, owner=owner, results=[(job, outcome)], rng=rng)


def record_all(session: Session, *, clock: Clock, owner: str, results: list[tuple[Job, Outcome]],
               rng: random.Random | None = None) -> list[str]:
    """Record a round's outcomes in the caller's transaction, each under its lease guard; returns
    the deliveries whose lease was lost. The rows are locked in two statements (deliveries, then
    their webhooks by id, so two dispatchers never lock webhooks in opposite orders)."""
    if not results:
        return []
    held = {row.id: row for row in session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id.in_([job.delivery_id for job, _ in results]),
                                      WebhookDelivery.lease_owner == owner)
        .order_by(WebhookDelivery.id).with_for_update())}
    hook_ids = sorted({row.webhook_id for row in held.values()})
    hooks = {h.id: h for h in session.scalars(select(Webhook).where(Webhook.id.in_(hook_ids))
                                               .order_by(Webhook.id).with_for_update())} if hook_ids else {}
    now = clock.now()
    for job, outcome in results:
        row = held.get(job.delivery_id)
        if row is not None:
            _apply(session, clock=clock, now=now, row=row, hook=hooks[row.webhook_id], outcome=outcome, rng=rng)
    session.flush()
    return [job.delivery_id for job, _ in results if job.delivery_id not in held]


def _apply(session: Session, *, clock: Clock, now: datetime, row: WebhookDelivery, hook: Webhook,
           outcome: Outcome, rng: random.Random | None) -> None:
    row.attempts += 1
    row.last_attempt_at = now
    row.last_status_code = outcome.status_code
    row.last_latency_ms = outcome.latency_ms
    row.last_response = outcome.response[:RESPONSE_EXCERPT] if outcome.response else None
    row.last_error = outcome.error[:500] if outcome.error else None
    row.lease_owner = None
    row.lease_expires_at = None
    if webhook_retry.succeeded(outcome.status_code):
        row.status, row.delivered_at, row.next_attempt_at = "delivered", now, None
        hook.failing_since = None
        return
    row.next_attempt_at = webhook_retry.next_attempt_at(attempts=row.attempts, now=now, rng=rng)
    if row.next_attempt_at is None or outcome.status_code == webhook_retry.GONE:
        row.status, row.next_attempt_at = "failed", None
    if hook.failing_since is None:
        hook.failing_since = now
    if hook.enabled and outcome.status_code == webhook_retry.GONE:
        webhooks.disable(session, clock=clock, hook=hook, reason="gone")
    elif hook.enabled and webhook_retry.should_disable(failing_since=as_utc(hook.failing_since), now=now):
        webhooks.disable(session, clock=clock, hook=hook, reason="failing")


def list_page(session: Session, *, hook: Webhook, status: str | None, cursor: str | None,
              limit: int) -> tuple[list[WebhookDelivery], str | None]:
    """Newest event first; the cursor is the last `event_seq` returned."""
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if cursor is not None:
        query = query.where(WebhookDelivery.event_seq < events.seq_cursor(cursor))
    rows = list(session.scalars(query.order_by(WebhookDelivery.event_seq.desc()).limit(limit + 1)))
    next_cursor = str(rows[limit - 1].event_seq) if len(rows) > limit else None
    return rows[:limit], next_cursor


def redeliver(session: Session, *, clock: Clock, hook: Webhook, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again now, with the same `webhook-id` and body (whatever its status)."""
    row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if row is None or row.webhook_id != hook.id:
        raise NotFound(f"delivery {delivery_id} not found", param="delivery_id")
    if not hook.enabled:
        raise InvalidState(f"webhook {hook.id} is disabled ({hook.disabled_reason}); enable it first",
                           param="enabled")
    now = clock.now()
    if row.lease_expires_at is not None and as_utc(row.lease_expires_at) > now:
        raise InvalidState(f"delivery {delivery_id} is being sent right now", param="delivery_id")
    row.status, row.next_attempt_at, row.lease_owner, row.lease_expires_at = "pending", now, None, None
    session.flush()
    return row


def purge(session: Session, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` finished deliveries created before `before` (pending ones are still owed)."""
    ids = list(session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.status != "pending",
                                                                WebhookDelivery.created_at < before)
                               .order_by(WebhookDelivery.id).limit(limit)))
    if not ids:
        return 0
    deleted = session.connection().execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    return int(deleted.rowcount)
