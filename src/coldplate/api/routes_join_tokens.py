"""Join tokens (admin only): create with an expiry and a use count, list without the secret, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from coldplate.api import responses
from coldplate.api.auth import require, state
from coldplate.api.problems import PROBLEM_RESPONSES
from coldplate.api.responses import JoinTokenCreated, JoinTokenList, JoinTokenOut
from coldplate.api.schemas import JoinTokenIn, Ref
from coldplate.clock import Clock, isoformat
from coldplate.db.tables import JoinToken
from coldplate.services import join_tokens
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1/join-tokens", responses=PROBLEM_RESPONSES)
admin = require("admin")


def _token(token: JoinToken, clock: Clock) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "created_at": isoformat(token.created_at),
            "expires_at": isoformat(token.expires_at), "max_uses": token.max_uses, "uses": token.uses,
            "revoked_at": isoformat(token.revoked_at), "state": join_tokens.state_of(token, now=clock.now())}


@router.post("", status_code=201, response_model=JoinTokenCreated)
def create_join_token(request: Request, body: JoinTokenIn | None = None,
                      _: Principal = Depends(admin)) -> dict[str, Any]:
    app = state(request)
    body = body or JoinTokenIn()
    with app.tx() as session:
        token, secret = join_tokens.create(session, clock=app.clock, name=body.name, expires_at=body.expires_at,
                                           expires_in_hours=body.expires_in_hours, max_uses=body.max_uses)
        return {**_token(token, app.clock), "token": secret}


@router.get("", response_model=JoinTokenList)
def list_join_tokens(request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    app = state(request)
    with app.read() as session:
        return {"data": responses.rows(join_tokens.list_tokens(session), lambda t: _token(t, app.clock),
                                       JoinTokenOut)}


@router.get("/{token_id}", response_model=JoinTokenOut)
def get_join_token(token_id: Ref, request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    app = state(request)
    with app.read() as session:
        return _token(join_tokens.get(session, token_id=token_id), app.clock)


@router.delete("/{token_id}", status_code=204)
def revoke_join_token(token_id: Ref, request: Request, _: Principal = Depends(admin)) -> Response:
    app = state(request)
    with app.tx() as session:
        join_tokens.revoke(session, clock=app.clock, token_id=token_id)
    return Response(status_code=204)
