"""A project's stored SSH public keys, referenced by id when creating instances."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import SshKey
from coldplate.ids import new_id
from coldplate.services.errors import InvalidInput, NotFound


def create(session: Session, *, clock: Clock, project_id: str, name: str, public_key: str) -> SshKey:
    key = SshKey(id=new_id("sshkey"), project_id=project_id, name=name, public_key=public_key,
                 created_at=clock.now())
    session.add(key)
    session.flush()
    return key


def list_keys(session: Session, *, project_id: str) -> list[SshKey]:
    return list(session.scalars(select(SshKey).where(SshKey.project_id == project_id)
                                .order_by(SshKey.created_at, SshKey.id)))


def delete(session: Session, *, project_id: str, key_id: str) -> None:
    key = session.get(SshKey, key_id)
    if key is None or key.project_id != project_id:
        raise NotFound(f"ssh key {key_id} not found", param="id")
    session.delete(key)


def resolve(session: Session, *, project_id: str, key_ids: list[str]) -> list[str]:
    """The public keys behind `key_ids`; an id the project does not own is a validation error."""
    found = {k.id: k.public_key for k in session.scalars(
        select(SshKey).where(SshKey.project_id == project_id, SshKey.id.in_(key_ids)))}
    for i, key_id in enumerate(key_ids):
        if key_id not in found:
            raise InvalidInput(f"ssh key {key_id} not found in this project", param=f"ssh_key_ids.{i}")
    return [found[k] for k in key_ids]
