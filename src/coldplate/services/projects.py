"""Projects, API keys, and authentication of keys (join tokens: services.join_tokens)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import ApiKey, Project
from coldplate.ids import hash_secret, new_id, new_secret
from coldplate.services.errors import InvalidInput, NotFound, Unauthorized

ADMIN_PROJECT_ID = "prj_admin"
SCOPES = ("instances:read", "instances:write", "billing:read", "webhooks:read", "webhooks:write", "admin")
PROJECT_SCOPES = ("instances:read", "instances:write", "billing:read", "webhooks:read", "webhooks:write")


@dataclass(frozen=True)
class Principal:
    project_id: str
    key_id: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


def ensure_admin(session: Session, *, clock: Clock, key: str | None) -> str | None:
    """Create the admin project and key on first start; returns the new key, or None if one exists.

    With `key` given (COLDPLATE_ADMIN_KEY) that exact key is made valid."""
    if session.get(Project, ADMIN_PROJECT_ID) is None:
        session.add(Project(id=ADMIN_PROJECT_ID, name="admin", created_at=clock.now()))
        session.flush()
    if key is not None:
        if session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_secret(key))).first() is None:
            _add_key(session, clock=clock, project_id=ADMIN_PROJECT_ID, name="admin", scopes=list(SCOPES),
                     secret=key)
        return None
    existing = session.scalars(
        select(ApiKey).where(ApiKey.project_id == ADMIN_PROJECT_ID, ApiKey.revoked_at.is_(None))
    ).first()
    if existing is not None:
        return None
    secret = new_secret("cp")
    _add_key(session, clock=clock, project_id=ADMIN_PROJECT_ID, name="admin", scopes=list(SCOPES), secret=secret)
    return secret


def create_project(session: Session, *, clock: Clock, name: str) -> Project:
    project = Project(id=new_id("prj"), name=name, created_at=clock.now())
    session.add(project)
    session.flush()
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.created_at, Project.id)))


def get_project(session: Session, project_id: str) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found", param="project_id")
    return project


def _add_key(session: Session, *, clock: Clock, project_id: str, name: str, scopes: list[str],
             secret: str) -> ApiKey:
    key = ApiKey(id=new_id("key"), project_id=project_id, name=name, key_hash=hash_secret(secret),
                 scopes=scopes, created_at=clock.now())
    session.add(key)
    session.flush()
    return key


def create_key(session: Session, *, clock: Clock, project_id: str, name: str,
               scopes: list[str]) -> tuple[ApiKey, str]:
    get_project(session, project_id)
    allowed = SCOPES if project_id == ADMIN_PROJECT_ID else PROJECT_SCOPES
    for scope in scopes:
        if scope not in allowed:
            raise InvalidInput(f"unknown or not allowed scope {scope!r}; allowed: {', '.join(allowed)}",
                               param="scopes")
    secret = new_secret("cp")
    return _add_key(session, clock=clock, project_id=project_id, name=name, scopes=scopes, secret=secret), secret


def list_keys(session: Session, *, project_id: str) -> list[ApiKey]:
    get_project(session, project_id)
    return list(session.scalars(
        select(ApiKey).where(ApiKey.project_id == project_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at, ApiKey.id)
    ))


def revoke_key(session: Session, *, clock: Clock, key_id: str) -> None:
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        raise NotFound(f"key {key_id} not found", param="key_id")
    key.revoked_at = clock.now()


def authenticate(session: Session, *, secret: str) -> Principal:
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_secret(secret))).first()
    if key is None or key.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key")
    return Principal(project_id=key.project_id, key_id=key.id, scopes=frozenset(key.scopes))

