"""Shared fixtures: a database per test on SQLite and (when configured) PostgreSQL, a fake clock,
the app behind a TestClient, and helpers that register hosts through the real agent API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coldplate import protocol
from coldplate.api.app import create_app
from coldplate.clock import FakeClock
from coldplate.server import build_state
from coldplate.services import projects
from coldplate.state import AppState, Settings
from tests.pgdb import fresh_database

ADMIN_KEY = "cp_test_admin_key"
PG_URL = os.environ.get("COLDPLATE_TEST_POSTGRES_URL")


def _fresh_postgres() -> Iterator[str]:
    assert PG_URL is not None
    yield from fresh_database(PG_URL)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coldplate.db'}"
        return
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("COLDPLATE_TEST_POSTGRES_URL must be set in CI")
        pytest.skip("COLDPLATE_TEST_POSTGRES_URL is not set")
    yield from _fresh_postgres()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'coldplate.db'}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(db_url: str, clock: FakeClock) -> Iterator[AppState]:
    app_state = build_state(db_url, clock=clock, settings=Settings(run_loops=False, host_lost_grace_s=120))
    with app_state.tx() as session:
        projects.ensure_admin(session, clock=clock, key=ADMIN_KEY)
    yield app_state
    app_state.sessions.kw["bind"].dispose()


@pytest.fixture
def client(state: AppState) -> Iterator[TestClient]:
    with TestClient(create_app(state), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield test_client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Fleet:
    """Registers hostnodes through the agent API and acts as their agents in tests."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.join_token = client.post("/v1/join-tokens", json={"name": "test"}).json()["token"]
        self.tokens: dict[str, str] = {}
        self._ports = 20000

    def host(self, name: str, *, gpu: str = "H100", count: int = 8, region: str = "eu", price: str = "2.00",
             spot: str = "1.00", ports: int = 100, **extra: Any) -> str:
        body = protocol.Registration.model_validate({
            "join_token": self.join_token, "name": name, "region": region,
            "location": {"city": "Frankfurt", "country": "DE"}, "gpu": {"model": gpu, "count": count},
            "vcpus": 16 * max(count, 1), "memory_gb": 128 * max(count, 1), "disk_gb": 2000,
            "port_range": [self._ports, self._ports + ports - 1],
            "prices": {"gpu_per_hour": price, "spot_gpu_per_hour": spot}, **extra,
        })
        self._ports += ports
        response = self.client.post("/v1/agent/register", json=body.model_dump(mode="json"))
        assert response.status_code == 201, response.text
        registered = protocol.Registered.model_validate(response.json())
        self.tokens[registered.hostnode_id] = registered.agent_token
        return registered.hostnode_id

    def report(self, host_id: str, instance_id: str, status: str, **extra: Any) -> Any:
        """A transition report as sent, unchecked here: tests send bad ones on purpose."""
        return self.client.post(f"/v1/agent/instances/{instance_id}/transition", json={"status": status, **extra},
                                headers=auth(self.tokens[host_id]))

    def assignments(self, host_id: str, since: int = -1) -> dict[str, Any]:
        response = self.client.get("/v1/agent/assignments", params={"since": since, "wait": 0},
                                   headers=auth(self.tokens[host_id]))
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        protocol.Assignments.model_validate(data)  # what the server sends, the agent reads
        return data

    def heartbeat(self, host_id: str) -> Any:
        return self.client.post("/v1/agent/heartbeat", json=protocol.Heartbeat().model_dump(mode="json"),
                                headers=auth(self.tokens[host_id]))


@pytest.fixture
def fleet(client: TestClient) -> Fleet:
    return Fleet(client)


@pytest.fixture
def project_key(client: TestClient) -> str:
    project = client.post("/v1/projects", json={"name": "team-a"}).json()
    key = client.post(f"/v1/projects/{project['id']}/keys", json={"name": "ci"}).json()
    return str(key["key"])


TEST_IMAGE = "coldplate-test/busybox:2"  # 2: with /etc/passwd (sftp-server looks its user up)
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "sleep", "httpd", "mkdir", "id", "wc", "trap", "kill", "true",
                   "env", "date", "hostname", "ps", "grep", "touch", "rm", "sed", "seq", "nc", "wget")


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """The Docker engine scripts/dockerd.sh started (DOCKER_HOST); required in CI, skipped elsewhere."""
    import docker

    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Docker engine (scripts/dockerd.sh): {exc}")
        pytest.skip(f"no Docker engine answers: {exc}")
    return client


@pytest.fixture(scope="session")
def busybox_image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny image built here with `docker import` from the static busybox: no registry is reachable."""
    import io
    import tarfile

    try:
        docker_client.images.get(TEST_IMAGE)
        return TEST_IMAGE
    except Exception:  # not built yet
        pass
    busybox = Path("/bin/busybox")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for folder in ("tmp", "workspace", "root", "etc"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(info)
        for name, text in (("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", b"root:x:0:\n")):
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(text), 0o644
            tar.addfile(entry, io.BytesIO(text))
    repository, tag = TEST_IMAGE.split(":")
    docker_client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)
    try:
        docker_client.images.get(TEST_IMAGE)
    except Exception:  # Podman's compatible API ignores the tag of an import and says `latest`
        docker_client.images.get(f"{repository}:latest").tag(repository, tag)
    return TEST_IMAGE
