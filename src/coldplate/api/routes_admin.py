"""Projects and API keys (admin only); join tokens: routes_join_tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from coldplate.api.auth import require, state
from coldplate.api.problems import PROBLEM_RESPONSES
from coldplate.api.responses import KeyCreated, KeyList, ProjectList, ProjectOut
from coldplate.api.schemas import KeyIn, ProjectBudgetIn, ProjectIn, Ref
from coldplate.clock import isoformat
from coldplate.db.tables import ApiKey, Project
from coldplate.domain import pricing
from coldplate.services import budgets, projects
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)
admin = require("admin")


def _project(p: Project) -> dict[str, Any]:
    budget = None if p.monthly_budget_micros is None else pricing.format_micros(p.monthly_budget_micros)
    return {"id": p.id, "name": p.name, "created_at": isoformat(p.created_at), "monthly_budget": budget,
            "on_budget_exceeded": p.on_budget_exceeded}


def _key(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "project_id": k.project_id, "scopes": k.scopes,
            "created_at": isoformat(k.created_at)}


@router.post("/projects", status_code=201, response_model=ProjectOut)
def create_project(body: ProjectIn, request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        return _project(projects.create_project(session, clock=app.clock, name=body.name))


@router.get("/projects", response_model=ProjectList)
def list_projects(request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    with state(request).read() as session:
        return {"data": [_project(p) for p in projects.list_projects(session)]}


@router.patch("/projects/{project_id}", response_model=ProjectOut)
def update_project(project_id: Ref, body: ProjectBudgetIn, request: Request,
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


@router.post("/projects/{project_id}/keys", status_code=201, response_model=KeyCreated)
def create_key(project_id: Ref, body: KeyIn, request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        key, secret = projects.create_key(session, clock=app.clock, project_id=project_id, name=body.name,
                                          scopes=body.scopes)
        return {**_key(key), "key": secret}


@router.get("/projects/{project_id}/keys", response_model=KeyList)
def list_keys(project_id: Ref, request: Request, _: Principal = Depends(admin)) -> dict[str, Any]:
    with state(request).read() as session:
        return {"data": [_key(k) for k in projects.list_keys(session, project_id=project_id)]}


@router.delete("/keys/{key_id}", status_code=204)
def delete_key(key_id: Ref, request: Request, _: Principal = Depends(admin)) -> Response:
    app = state(request)
    with app.tx() as session:
        projects.revoke_key(session, clock=app.clock, key_id=key_id)
    return Response(status_code=204)

