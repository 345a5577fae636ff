"""Bearer-key authentication and scope checks, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coldplate.api.agent_gate import gate
from coldplate.api.problems import ApiProblem
from coldplate.services import projects
from coldplate.services.projects import Principal
from coldplate.state import AppState

_bearer = HTTPBearer(auto_error=False)


def state(request: Request) -> AppState:
    app_state: AppState = request.app.state.coldplate
    return app_state


def _secret(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise ApiProblem(401, "unauthorized", "send an API key as 'Authorization: Bearer cp_…'")
    return credentials.credentials


def require(scope: str) -> Callable[..., Principal]:
    def dependency(request: Request,
                   credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        secret = _secret(credentials)
        with state(request).read() as session:
            principal = projects.authenticate(session, secret=secret)
        if scope not in principal.scopes and not principal.is_admin:
            raise ApiProblem(403, "forbidden_scope", f"this key lacks the scope {scope!r}")
        return principal

    return dependency


async def optional_bearer(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str | None:
    """The bearer secret if one was sent: registration takes an agent token or an admin key, or neither."""
    return credentials.credentials if credentials is not None and credentials.credentials else None


async def agent_secret(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
    """The agent token sent, unchecked: for a route that checks it inside its own transaction."""
    return _secret(credentials)


async def agent_host(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
    """The id of the hostnode whose agent token was sent (checked in a group with others: agent_gate)."""
    return await gate(request).host_of(_secret(credentials))


def scoped_project(principal: Principal) -> str | None:
    """The project a principal may see: its own, or all for admins."""
    return None if principal.is_admin else principal.project_id
