"""Webhook endpoints: create, read, update, delete, rotate the secret; and signing per the
Standard Webhooks specification (https://www.standardwebhooks.com)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from coldplate.clock import Clock, as_utc
from coldplate.db.tables import Webhook
from coldplate.ids import new_id
from coldplate.services import destinations, outbox
from coldplate.services.errors import InvalidInput, NotFound

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
OLD_SECRET_VALID = timedelta(hours=24)  # after a rotation, deliveries are signed with both secrets this long
MAX_PER_PROJECT = 50


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(*, secrets_: list[str], msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of id.timestamp.body>` per secret,
    space-separated (the specification's way to sign with an old and a new secret at once)."""
    message = f"{msg_id}.{timestamp}.{body}".encode()
    signatures = []
    for secret in secrets_:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
        digest = hmac.new(key, message, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


def signing_secrets(hook: Webhook, now: datetime) -> list[str]:
    """The current secret, and the previous one while it is still valid."""
    keys = [hook.secret]
    if hook.previous_secret and hook.previous_secret_expires_at and as_utc(hook.previous_secret_expires_at) > now:
        keys.append(hook.previous_secret)
    return keys


def create(session: Session, *, clock: Clock, project_id: str, url: str, event_types: list[str],
           description: str, enabled: bool) -> Webhook:
    """The URL's syntax is checked here; where it resolves (DNS: network I/O) is checked by the
    caller before the transaction opens (`destinations.check_at_create`), and at every delivery."""
    destinations.parse(url)
    count = len(list(session.scalars(select(Webhook.id).where(Webhook.project_id == project_id))))
    if count >= MAX_PER_PROJECT:
        raise InvalidInput(f"a project has at most {MAX_PER_PROJECT} webhooks", param="url")
    now = clock.now()
    hook = Webhook(id=new_id("wh"), project_id=project_id, url=url, description=description,
                   event_types=sorted(set(event_types)), enabled=enabled, disabled_reason=None if enabled else "user",
                   secret=new_secret(), created_at=now, updated_at=now)
    session.add(hook)
    session.flush()
    return hook


def get(session: Session, *, project_id: str | None, webhook_id: str) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None or (project_id is not None and hook.project_id != project_id):
        raise NotFound(f"webhook {webhook_id} not found", param="id")
    return hook


def list_hooks(session: Session, *, project_id: str) -> list[Webhook]:
    return list(session.scalars(select(Webhook).where(Webhook.project_id == project_id)
                                .order_by(Webhook.created_at, Webhook.id)))


def update(session: Session, *, clock: Clock, hook: Webhook, url: str | None, event_types: list[str] | None,
           description: str | None, enabled: bool | None) -> Webhook:
    if url is not None and url != hook.url:
        destinations.parse(url)  # and `check_at_create` by the caller, as for create
        hook.url = url
    if event_types is not None:
        hook.event_types = sorted(set(event_types))
    if description is not None:
        hook.description = description
    if enabled is not None and enabled != hook.enabled:
        hook.enabled = enabled
        hook.disabled_reason = None if enabled else "user"
        hook.failing_since = None  # a re-enabled endpoint starts a fresh five-day count
    hook.updated_at = clock.now()
    session.flush()
    return hook


def delete(session: Session, *, hook: Webhook) -> None:
    session.delete(hook)  # its deliveries go with it (ON DELETE CASCADE)
    session.flush()


def rotate_secret(session: Session, *, clock: Clock, hook: Webhook) -> Webhook:
    now = clock.now()
    hook.previous_secret = hook.secret
    hook.previous_secret_expires_at = now + OLD_SECRET_VALID
    hook.secret = new_secret()
    hook.updated_at = now
    session.flush()
    return hook


def disable(session: Session, *, clock: Clock, hook: Webhook, reason: str) -> None:
    """The dispatcher gives up on an endpoint (`gone`: it answered 410; `failing`: five days of
    failures); the project hears of it through a `webhook.disabled` event."""
    hook.enabled = False
    hook.disabled_reason = reason
    hook.updated_at = clock.now()
    outbox.record(session, clock=clock, project_id=hook.project_id, type="webhook.disabled",
                  data={"webhook_id": hook.id, "url": hook.url, "reason": reason})
    session.flush()
