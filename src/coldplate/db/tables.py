"""Every table coldplate keeps. Money in `*_micros` integers; datetimes UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    # Budget (issue 10): a monthly limit, what happens when it is spent, the month it was announced.
    monthly_budget_micros: Mapped[int | None] = mapped_column(BigInteger)
    on_budget_exceeded: Mapped[str | None] = mapped_column(String(20))
    budget_exceeded_month: Mapped[str | None] = mapped_column(String(7))


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]]
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class SshKey(Base):
    __tablename__ = "ssh_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    public_key: Mapped[str] = mapped_column(String(16384))
    created_at: Mapped[datetime]


class JoinToken(Base):
    __tablename__ = "join_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    # Limits on what a leaked token can do: each registration of a new host uses it once.
    expires_at: Mapped[datetime | None]
    max_uses: Mapped[int | None]
    uses: Mapped[int] = mapped_column(default=0)
    revoked_at: Mapped[datetime | None]


class Hostnode(Base):
    __tablename__ = "hostnodes"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    region: Mapped[str] = mapped_column(String(20))
    city: Mapped[str] = mapped_column(String(100), default="")
    country: Mapped[str] = mapped_column(String(100), default="")
    address: Mapped[str] = mapped_column(String(200), default="127.0.0.1")
    status: Mapped[str] = mapped_column(String(20))
    gpu_type: Mapped[str] = mapped_column(String(40))
    gpu_count: Mapped[int]
    gpu_memory_mb: Mapped[int] = mapped_column(default=0)
    gpu_uuids: Mapped[list[Any]]
    vcpus: Mapped[int]
    memory_gb: Mapped[int]
    disk_gb: Mapped[int]
    port_lo: Mapped[int]
    port_hi: Mapped[int]
    gpu_price_micros: Mapped[int] = mapped_column(BigInteger)
    spot_gpu_price_micros: Mapped[int] = mapped_column(BigInteger)
    vcpu_price_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_gb_price_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_gb_price_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    uptime_pct: Mapped[float] = mapped_column(Float, default=100.0)
    agent_token_hash: Mapped[str] = mapped_column(String(64), index=True)
    heartbeat_timeout_s: Mapped[int] = mapped_column(default=30)
    last_heartbeat_at: Mapped[datetime | None]
    offline_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # Allocation state: changed only with a compare-and-set on `generation`.
    gpus_used: Mapped[list[Any]]
    gpus_free: Mapped[int]
    vcpus_used: Mapped[int] = mapped_column(default=0)
    memory_gb_used: Mapped[int] = mapped_column(default=0)
    disk_gb_used: Mapped[int] = mapped_column(default=0)
    ports_used: Mapped[list[Any]]
    generation: Mapped[int] = mapped_column(default=0)
    # Bumped whenever what the agent should do changes (long-poll wake-up).
    assignment_version: Mapped[int] = mapped_column(default=0)
    # What isolates its instances (bubblewrap, docker, none, simulated; None: not reported) and
    # which per-instance limits it enforces (vcpus, memory_gb, pids, disk_gb).
    sandbox: Mapped[str | None] = mapped_column(String(20))
    enforced_limits: Mapped[list[Any]] = mapped_column(default=list)

    __table_args__ = (
        Index("ix_hostnodes_placement", "gpu_type", "status", "gpu_price_micros", "gpus_free"),
    )


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(20))
    desired: Mapped[str] = mapped_column(String(20))
    status_reason: Mapped[str | None] = mapped_column(String(40))
    failure_reason: Mapped[str | None] = mapped_column(String(1000))
    restart_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    gpu_type: Mapped[str] = mapped_column(String(40))
    gpu_count: Mapped[int]
    gpu_indices: Mapped[list[Any]]
    vcpus: Mapped[int]
    memory_gb: Mapped[int]
    disk_gb: Mapped[int]
    hostnode_id: Mapped[str | None] = mapped_column(ForeignKey("hostnodes.id"), index=True)
    region: Mapped[str | None] = mapped_column(String(20))
    image: Mapped[str] = mapped_column(String(500))
    cmd: Mapped[list[Any] | None]
    entrypoint: Mapped[list[Any] | None]
    env: Mapped[dict[str, Any]]
    ssh_keys: Mapped[list[Any]]
    ports: Mapped[list[Any]]
    volumes: Mapped[list[Any]] = mapped_column(default=list)
    cloud_init: Mapped[dict[str, Any] | None]
    ssh_port: Mapped[int | None]
    labels: Mapped[dict[str, Any]]
    spot: Mapped[bool] = mapped_column(Boolean, default=False)
    max_price_micros: Mapped[int | None] = mapped_column(BigInteger)
    price_micros: Mapped[int] = mapped_column(BigInteger)
    max_hours: Mapped[float | None]
    grace_seconds: Mapped[int] = mapped_column(default=60)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    ip: Mapped[str | None] = mapped_column(String(100))
    exit_code: Mapped[int | None]
    exit_message: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    ready_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    terminated_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    # A loop's claim on the row while it works on it (services/leases.py).
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    # Bumped by every UPDATE of the row and matched in its WHERE: a write based on a stale read fails
    # (StaleDataError) and its transaction is retried instead of silently undoing a concurrent change.
    version: Mapped[int] = mapped_column(default=1)
    # Billing (issue 10): budget, reservation, the open segment, and the sum of its ledger entries.
    budget_limit_micros: Mapped[int | None] = mapped_column(BigInteger)
    budget_alerted: Mapped[int] = mapped_column(default=0)  # last threshold (percent) announced
    reserved_hours: Mapped[int | None]
    reserved_until: Mapped[datetime | None]  # set when the reservation is charged (first ready)
    seg_kind: Mapped[str | None] = mapped_column(String(20))  # compute | storage | None (nothing open)
    seg_no: Mapped[int] = mapped_column(default=0)  # counts the segments opened; part of the ledger key
    seg_start: Mapped[datetime | None] = mapped_column(index=True)
    seg_rate_micros: Mapped[int | None] = mapped_column(BigInteger)
    seg_billed_s: Mapped[int] = mapped_column(BigInteger, default=0)  # seconds billed so far in this run
    billed_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # sum of this instance's ledger entries

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_instances_project_created", "project_id", "created_at", "id"),
        Index("ix_instances_expires", "expires_at"),
        # A name is unique in its project among instances that are not terminated.
        Index("uq_instances_live_name", "project_id", "name", unique=True,
              sqlite_where=text("status != 'terminated'"), postgresql_where=text("status != 'terminated'")),
    )


class Event(Base):
    """The outbox: one row per state change, written in the same transaction."""

    __tablename__ = "events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    project_id: Mapped[str] = mapped_column(String(40), index=True)
    instance_id: Mapped[str | None] = mapped_column(String(40), index=True)
    type: Mapped[str] = mapped_column(String(60))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]  # when the webhook dispatcher fanned it out to deliveries

    __table_args__ = (
        # The dispatcher's queue: events not yet fanned out, in order.
        Index("ix_events_undelivered", "seq", sqlite_where=text("delivered_at IS NULL"),
              postgresql_where=text("delivered_at IS NULL")),
    )


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    project_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class AgentTask(Base):
    """Work for an agent that answers a user request (exec, logs); the agent long-polls for it."""

    __tablename__ = "agent_tasks"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    hostnode_id: Mapped[str] = mapped_column(ForeignKey("hostnodes.id"))
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"))
    kind: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))  # pending | done
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    done_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_agent_tasks_host_status", "hostnode_id", "status"),)


class MetricSample(Base):
    __tablename__ = "metric_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    values: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_metric_samples_instance_at", "instance_id", "at"), Index("ix_metric_samples_at", "at"))


class Webhook(Base):
    """A project's webhook endpoint. The secrets are kept in clear: signing needs them."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[Any]]  # empty: every type
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(40))
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None]
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookDelivery(Base):
    """One event for one webhook: its exact body (so every attempt sends the same bytes under the
    same `webhook-id`), the last attempt's outcome, and the lease of the dispatcher sending it."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the webhook-id header
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_seq: Mapped[int]
    event_type: Mapped[str] = mapped_column(String(60))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_latency_ms: Mapped[int | None]
    last_response: Mapped[str | None] = mapped_column(String(1024))
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(200))  # services.leases.new_owner: host:pid:loop:random
    lease_expires_at: Mapped[datetime | None]

    __table_args__ = (
        Index("uq_webhook_deliveries_event", "webhook_id", "event_seq", unique=True),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )


class LedgerEntry(Base):
    """Append-only: one row per closed piece of a billing segment. The unique key makes a piece chargeable once."""

    __tablename__ = "ledger_entries"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(40))
    instance_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(20))  # compute | storage | reservation
    segment: Mapped[int]
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    seconds: Mapped[int] = mapped_column(BigInteger)
    rate_micros: Mapped[int] = mapped_column(BigInteger)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    gpu_type: Mapped[str] = mapped_column(String(40))
    labels: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]

    __table_args__ = (
        Index("uq_ledger_entries_piece", "instance_id", "kind", "segment", "period_start", unique=True),
        Index("ix_ledger_entries_project_period", "project_id", "period_start"),
        Index("ix_ledger_entries_instance_period", "instance_id", "period_start"),
    )
