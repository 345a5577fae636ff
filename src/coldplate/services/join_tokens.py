"""Join tokens: the secret a new host registers with. Each one can expire, carry a use count and
be revoked, so a token that leaks (a shell history, a CI log) stops being a way into the fleet.

A token only admits a host under a name nobody holds yet: taking over a registered name needs that
host's own agent token or an admin key (services.hostnodes.register)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from coldplate.clock import Clock, as_utc
from coldplate.db.tables import JoinToken
from coldplate.ids import hash_secret, new_id, new_secret
from coldplate.services.errors import InvalidInput, NotFound, Unauthorized

TokenState = Literal["active", "expired", "used_up", "revoked"]


class JoinTokenRefused(Unauthorized):
    """A known token that may no longer be used; `code` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail, param="join_token")
        self.code = code


def create(session: Session, *, clock: Clock, name: str, expires_at: datetime | None = None,
           expires_in_hours: float | None = None, max_uses: int | None = None) -> tuple[JoinToken, str]:
    """A new token and its secret (shown once). At most one of the two expiry forms."""
    now = clock.now()
    if expires_at is not None and expires_in_hours is not None:
        raise InvalidInput("give expires_at or expires_in_hours, not both", param="expires_in_hours")
    if expires_in_hours is not None:
        if expires_in_hours <= 0:
            raise InvalidInput("expires_in_hours must be more than 0", param="expires_in_hours")
        expires_at = now + timedelta(hours=expires_in_hours)
    if expires_at is not None and as_utc(expires_at) <= now:
        raise InvalidInput("expires_at must be in the future", param="expires_at")
    if max_uses is not None and max_uses < 1:
        raise InvalidInput("max_uses must be at least 1", param="max_uses")
    secret = new_secret("cpj")
    token = JoinToken(id=new_id("jt"), name=name, token_hash=hash_secret(secret), created_at=now,
                      expires_at=expires_at, max_uses=max_uses, uses=0, revoked_at=None)
    session.add(token)
    session.flush()
    return token, secret


def state_of(token: JoinToken, *, now: datetime) -> TokenState:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and as_utc(token.expires_at) <= now:
        return "expired"
    if token.max_uses is not None and token.uses >= token.max_uses:
        return "used_up"
    return "active"


def list_tokens(session: Session) -> list[JoinToken]:
    return list(session.scalars(select(JoinToken).order_by(JoinToken.created_at, JoinToken.id)))


def get(session: Session, *, token_id: str) -> JoinToken:
    token = session.get(JoinToken, token_id)
    if token is None:
        raise NotFound(f"join token {token_id} not found", param="token_id")
    return token


def revoke(session: Session, *, clock: Clock, token_id: str) -> JoinToken:
    """Revoked at once and for good; revoking twice keeps the first time."""
    token = get(session, token_id=token_id)
    if token.revoked_at is None:
        token.revoked_at = clock.now()
        session.flush()
    return token


_REFUSALS: dict[TokenState, tuple[str, str]] = {
    "revoked": ("join_token_revoked", "this join token has been revoked"),
    "expired": ("join_token_expired", "this join token has expired"),
    "used_up": ("join_token_used_up", "this join token has been used as many times as it allows (max_uses)"),
}


def use(session: Session, *, clock: Clock, secret: str) -> JoinToken:
    """Spend one use of the token for a new host's registration, or refuse with the reason.

    The count goes up in one guarded UPDATE, so two hosts racing for the last use cannot both win."""
    token = session.scalars(select(JoinToken).where(JoinToken.token_hash == hash_secret(secret))).first()
    if token is None:
        raise Unauthorized("unknown join token", param="join_token")
    now = clock.now()
    state = state_of(token, now=now)
    if state == "active":
        spent = session.execute(
            update(JoinToken)
            .where(JoinToken.id == token.id, JoinToken.revoked_at.is_(None),
                   or_(JoinToken.max_uses.is_(None), JoinToken.uses < JoinToken.max_uses))
            .values(uses=JoinToken.uses + 1)
            .execution_options(synchronize_session=False)
        )
        session.refresh(token)
        if getattr(spent, "rowcount", 0) == 1:
            return token
        state = state_of(token, now=now)  # another registration took the last use, or a revoke won
    code, detail = _REFUSALS.get(state, _REFUSALS["used_up"])
    raise JoinTokenRefused(code, detail)
