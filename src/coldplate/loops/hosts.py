"""Hostnodes silent past their heartbeat timeout go offline; their instances fail after a grace."""

from __future__ import annotations

from coldplate.services import actions, hostnodes
from coldplate.state import AppState


def run_once(app: AppState) -> tuple[int, int]:
    with app.tx() as session:
        offline = hostnodes.mark_silent_offline(session, clock=app.clock)
    with app.tx() as session:
        lost = actions.fail_lost(session, clock=app.clock, grace_seconds=app.settings.host_lost_grace_s)
    return len(offline), len(lost)
