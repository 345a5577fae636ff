"""A project's stored SSH public keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from coldplate.api.auth import require, state
from coldplate.api.problems import PROBLEM_RESPONSES
from coldplate.api.responses import SshKeyList, SshKeyOut
from coldplate.api.schemas import Ref, SshKeyIn
from coldplate.clock import isoformat
from coldplate.db.tables import SshKey
from coldplate.services import ssh_keys
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1/ssh-keys", responses=PROBLEM_RESPONSES)


def _view(key: SshKey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "public_key": key.public_key, "created_at": isoformat(key.created_at)}


@router.post("", status_code=201, response_model=SshKeyOut)
def create(body: SshKeyIn, request: Request, principal: Principal = Depends(require("instances:write"))
           ) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        return _view(ssh_keys.create(session, clock=app.clock, project_id=principal.project_id, name=body.name,
                                     public_key=body.public_key))


@router.get("", response_model=SshKeyList)
def list_(request: Request, principal: Principal = Depends(require("instances:read"))) -> dict[str, Any]:
    with state(request).read() as session:
        return {"data": [_view(k) for k in ssh_keys.list_keys(session, project_id=principal.project_id)]}


@router.delete("/{key_id}", status_code=204)
def delete(key_id: Ref, request: Request, principal: Principal = Depends(require("instances:write"))) -> Response:
    with state(request).tx() as session:
        ssh_keys.delete(session, project_id=principal.project_id, key_id=key_id)
    return Response(status_code=204)
