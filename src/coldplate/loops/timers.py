"""Terminates instances whose reservation (`duration_hours`) or `max_hours` has run out."""

from __future__ import annotations

from coldplate.services import actions
from coldplate.state import AppState


def run_once(app: AppState) -> int:
    done = 0
    while True:
        with app.tx() as session:
            batch = actions.expire_due(session, clock=app.clock, limit=50)
        done += len(batch)
        if len(batch) < 50:
            return done
