"""Projects, API keys and join tokens (admin only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from coldplate.api.auth import require, state
from coldplate.api.schemas import JoinTokenIn, KeyIn, ProjectBudgetIn, ProjectIn
from coldplate.clock import isoformat
from coldplate.db.tables import ApiKey, Project
from coldplate.domain import pricing
from coldplate.services import budgets, projects
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1")
admin = require("admin")


def _project(p: Project) -> dict[str, Any]:
    budget = None if p.monthly_budget_micros is None else pricing.format_micros(p.monthly_budget_micros)
    return {"id": p.id, "name": p.name, "created_at": isoformat(p.created_at), "monthly_budget": budget,
            "on_budget_exceeded": p.on_budget_exceeded}


def _key(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "project_id": k.project_id, "scopes": k.scopes,
            "created_at": isoformat(k.created_at)}


@router.post("/projects", status_code=201)
def create_project(body: ProjectIn, request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        return _project(projects.create_project(session, clock=app.clock, name=body.name))


@router.get("/projects")
def list_projects(request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    with state(request).read() as session:
        return {"data": [_project(p) for p in projects.list_projects(session)]}


@router.patch("/projects/{project_id}")
def update_project(project_id: str, body: ProjectBudgetIn, request: Request,
                   _: Principal = Depends(admin)) -> dict[str, Any]:
    """The monthly budget and what happens once it is spent (default block_creates); null removes it."""
    app = state(request)
    with app.tx() as session:
        project = projects.get_project(session, project_id)
        budget, policy = project.monthly_budget_micros, body.on_budget_exceeded or project.on_budget_exceeded
        if "monthly_budget" in body.model_fields_set:
            budget = None if body.monthly_budget is None else pricing.to_micros(body.monthly_budget)
        return _project(budgets.set_project_budget(session, project=project, monthly_budget_micros=budget,
                                                   on_budget_exceeded=policy))


@router.post("/projects/{project_id}/keys", status_code=201)
def create_key(project_id: str, body: KeyIn, request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        key, secret = projects.create_key(session, clock=app.clock, project_id=project_id, name=body.name,
                                          scopes=body.scopes)
        return {**_key(key), "key": secret}


@router.get("/projects/{project_id}/keys")
def list_keys(project_id: str, request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    with state(request).read() as session:
        return {"data": [_key(k) for k in projects.list_keys(session, project_id=project_id)]}


@router.delete("/keys/{key_id}", status_code=204)
def delete_key(key_id: str, request: Request, _: Principal = Depends(admin)) -> Response:
    app = state(request)
    with app.tx() as session:
        projects.revoke_key(session, clock=app.clock, key_id=key_id)
    return Response(status_code=204)


@router.post("/join-tokens", status_code=201)
def create_join_token(request: Request, body: JoinTokenIn | None = None,
                      _: Principal = Depends(admin)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        token, secret = projects.create_join_token(session, clock=app.clock, name=(body or JoinTokenIn()).name)
        return {"id": token.id, "name": token.name, "token": secret, "created_at": isoformat(token.created_at)}
