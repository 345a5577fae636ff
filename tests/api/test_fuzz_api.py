"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis, in process), on
SQLite and PostgreSQL, with each of the three kinds of credential (admin key, project key, agent
token): whatever a client sends, the answer is never a 5xx, and every answer (problems included)
is what /openapi.json says it is. The apps and their databases are made when this module is
collected (schemathesis loads the schema then). About 6 examples per operation, credential and
database: 51 operations, 306 tests, roughly 1,800 calls; 90 s on two shared cores. The project key
holds every scope but admin, so the billing, webhook and event routes are reached past their scope
checks (test_each_credential_reaches_the_routes_of_its_scopes)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import create_engine, text

from coldplate import protocol
from coldplate.api.app import create_app
from coldplate.clock import FakeClock
from coldplate.server import build_state
from coldplate.services import hostnodes, join_tokens, projects
from coldplate.state import AppState, Settings
from tests.conftest import ADMIN_KEY, PG_URL

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance]


def _database(kind: str) -> str | None:
    if kind == "sqlite":
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='cp-fuzz-')) / 'fuzz.db'}"
    if not PG_URL:
        return None
    name = f"cp_fuzz_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{PG_URL.rsplit('/', 1)[0]}/{name}"


def _world(url: str) -> tuple[AppState, dict[str, str]]:
    """A database with a project key and a registered host's agent token beside the admin key."""
    state = build_state(url, clock=FakeClock(), settings=Settings(run_loops=False))
    with state.tx() as session:
        projects.ensure_admin(session, clock=state.clock, key=ADMIN_KEY)
        project = projects.create_project(session, clock=state.clock, name="fuzz")
        _, project_key = projects.create_key(session, clock=state.clock, project_id=project.id, name="fuzz",
                                             scopes=["instances:read", "instances:write", "billing:read",
                                                                     "webhooks:read", "webhooks:write"])
        _, join = join_tokens.create(session, clock=state.clock, name="fuzz")
        spec = protocol.HostInfo.model_validate({
            "name": "fuzz-host", "region": "eu", "gpu": {"model": "H100", "count": 8}, "vcpus": 64, "memory_gb": 512,
            "disk_gb": 1000, "port_range": (30000, 30099), "prices": {"gpu_per_hour": "2", "spot_gpu_per_hour": "2"}})
        _, agent_token = hostnodes.register(session, clock=state.clock, join_token=join, spec=spec, credential=None)
    return state, {"admin": ADMIN_KEY, "project": project_key, "agent": agent_token}


SCHEMAS: dict[str, Any] = {}
CREDENTIALS: dict[str, dict[str, str]] = {}
STATES: dict[str, AppState] = {}
for _kind in ("sqlite", "postgres"):
    _url = _database(_kind)
    if _url is None:
        continue
    STATES[_kind], CREDENTIALS[_kind] = _world(_url)
    SCHEMAS[_kind] = schemathesis.openapi.from_asgi("/openapi.json", create_app(STATES[_kind]))


@pytest.fixture(scope="module", autouse=True)
def _drop_databases() -> Iterator[None]:
    yield
    for state in STATES.values():
        state.sessions.kw["bind"].dispose()
    if PG_URL and "postgres" in STATES:
        name = STATES["postgres"].sessions.kw["bind"].url.database
        admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
if os.environ.get("CI") and "postgres" not in SCHEMAS:
    raise RuntimeError("COLDPLATE_TEST_POSTGRES_URL must be set in CI")


def _fuzz(database: str) -> Any:
    schema = SCHEMAS.get(database)
    if schema is None:
        return pytest.mark.skip(reason="COLDPLATE_TEST_POSTGRES_URL is not set")(lambda: None)

    @schema.parametrize()
    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @pytest.mark.parametrize("credential", ["admin", "project", "agent"])
    def test(case: Any, credential: str) -> None:
        if case.path == "/v1/agent/assignments" and isinstance(case.query, dict):
            case.query["wait"] = 0  # a long-poll would only make the suite wait
        if case.path.endswith("/wait") and isinstance(case.query, dict):
            case.query["timeout"] = 0
        headers = {"Authorization": f"Bearer {CREDENTIALS[database][credential]}"}
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)

    return test


def test_each_credential_reaches_the_routes_of_its_scopes() -> None:
    """Were a scope missing, every case of those routes would stop at the 403 and fuzz nothing."""
    database = next(iter(SCHEMAS), None)
    if database is None:
        pytest.skip("no database")
    client = TestClient(create_app(STATES[database]))
    reads = ("/v1/webhooks", "/v1/usage", "/v1/costs", "/v1/events", "/v1/instances")
    for credential, paths in (("project", reads), ("admin", reads + ("/v1/join-tokens", "/v1/projects"))):
        headers = {"Authorization": f"Bearer {CREDENTIALS[database][credential]}"}
        for path in paths:
            assert client.get(path, headers=headers).status_code == 200, (credential, path)
    paths = [str(p) for p in SCHEMAS[database].raw_schema["paths"]]
    for path in ("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", "/v1/instances/{ref}/extend",
                 "/v1/join-tokens/{token_id}", "/v1/projects/{project_id}"):
        assert path in paths


test_sqlite_answers_match_the_schema = _fuzz("sqlite")
test_postgres_answers_match_the_schema = _fuzz("postgres")
