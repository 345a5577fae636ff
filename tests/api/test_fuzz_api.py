"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis, in process):
whatever a client sends, the answer is never a 5xx. The app runs on its own SQLite database,
made when this module is collected (schemathesis loads the schema then)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from coldplate.api.app import create_app
from coldplate.clock import FakeClock
from coldplate.server import build_state
from coldplate.services import projects
from coldplate.state import Settings
from tests.conftest import ADMIN_KEY

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
DATABASE = Path(tempfile.mkdtemp(prefix="cp-fuzz-")) / "fuzz.db"
STATE = build_state(f"sqlite:///{DATABASE}", clock=FakeClock(), settings=Settings(run_loops=False))
with STATE.tx() as _session:
    projects.ensure_admin(_session, clock=STATE.clock, key=ADMIN_KEY)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(STATE))


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_gives_a_server_error(case: Any) -> None:
    response = case.call(headers=HEADERS)
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)
