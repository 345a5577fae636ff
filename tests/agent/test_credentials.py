"""The agent's secrets: the join token from the environment or a 0600 file, the agent token kept in
a 0600 file and presented on restart (against the real app, SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import httpx
import pytest

from coldplate.agent import credentials
from coldplate.agent.credentials import CredentialError, TokenStore
from coldplate.agent.daemon import Agent
from coldplate.agent.runtimes.sim import SimRuntime
from coldplate.agent.ssh import host_key
from coldplate.api.app import create_app
from coldplate.services import hostnodes, join_tokens
from coldplate.state import AppState
from tests.agent.test_agent import SPEC


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_join_token_file_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(credentials.JOIN_TOKEN_ENV, "cpj_from_env")
    path = tmp_path / "join-token"
    path.write_text("cpj_from_file\n")
    path.chmod(0o644)
    with pytest.raises(CredentialError, match="chmod 600"):
        credentials.join_token(path)
    path.chmod(0o600)
    assert credentials.join_token(path) == "cpj_from_file"  # the file wins over the environment
    assert credentials.join_token(None) == "cpj_from_env"
    monkeypatch.delenv(credentials.JOIN_TOKEN_ENV)
    assert credentials.join_token(None) is None
    with pytest.raises(CredentialError, match="cannot read"):
        credentials.join_token(tmp_path / "missing")
    path.write_text("\n")
    with pytest.raises(CredentialError, match="empty"):
        credentials.join_token(path)


def test_token_store_is_private_and_tightens_what_it_finds(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask creates nothing readable by others
    try:
        store = TokenStore(tmp_path)
        store.save("gpu-01", "cpa_one")
        store.save("../../etc/odd name", "cpa_two")
    finally:
        os.umask(old)
    assert mode(store.directory) == 0o700
    files = sorted(store.directory.iterdir())
    assert len(files) == 2 and all(mode(f) == 0o600 for f in files)  # the odd name stays inside
    assert store.load("gpu-01") == "cpa_one" and store.load("../../etc/odd name") == "cpa_two"
    assert store.load("never-registered") is None
    store.path("gpu-01").chmod(0o644)
    store.directory.chmod(0o755)
    assert store.load("gpu-01") == "cpa_one"
    assert mode(store.path("gpu-01")) == 0o600
    store.save("gpu-01", "cpa_three")
    assert mode(store.directory) == 0o700 and store.load("gpu-01") == "cpa_three"


def test_ssh_host_key_is_created_private_and_tightened(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        first = host_key(tmp_path)
    finally:
        os.umask(old)
    path = tmp_path / "ssh_host_ed25519_key"
    assert mode(path) == 0o600
    path.chmod(0o644)
    assert host_key(tmp_path).export_public_key() == first.export_public_key()  # the same key, kept
    assert mode(path) == 0o600


def test_restarted_agent_re_registers_with_its_kept_token(state: AppState, tmp_path: Path) -> None:
    """Against the real app: the first start uses the join token and keeps the agent token; a restart
    needs no join token; another machine claiming the name with the join token is refused."""
    with state.tx() as session:
        _, secret = join_tokens.create(session, clock=state.clock, name="t", max_uses=1)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            def agent(join_token: str | None, data_dir: Path) -> Agent:
                return Agent(server_url="http://cp", join_token=join_token, spec=SPEC, runtime=SimRuntime(),
                             client=client, tokens=TokenStore(data_dir))

            first = agent(secret, tmp_path / "host")
            await first.register()
            kept = TokenStore(tmp_path / "host").load(SPEC.name)
            assert kept == first.token and first.hostnode_id

            restarted = agent(None, tmp_path / "host")
            await restarted.register()
            assert (restarted.hostnode_id, restarted.token) == (first.hostnode_id, first.token)

            impostor = agent(secret, tmp_path / "elsewhere")
            with pytest.raises(httpx.HTTPStatusError) as caught:
                await impostor.register()
            assert caught.value.response.status_code == 403
            proposed = TokenStore(tmp_path / "elsewhere").load(SPEC.name)  # kept before asking, never let in
            assert proposed is not None and proposed != first.token and impostor.hostnode_id is None
            refused = await client.post("/v1/agent/heartbeat", json={},
                                        headers={"Authorization": f"Bearer {proposed}"})
            assert refused.status_code == 401
            response = await client.post("/v1/agent/heartbeat", json={},
                                         headers={"Authorization": f"Bearer {first.token}"})
            assert response.status_code == 200

    asyncio.run(scenario())


def test_a_registration_whose_answer_is_lost_is_retried_and_let_in(state: AppState, tmp_path: Path) -> None:
    """The server commits the registration but the agent never sees the answer (its read timed out
    while the server was busy): the retry must not be refused as a takeover of a registered name."""
    with state.tx() as session:
        _, secret = join_tokens.create(session, clock=state.clock, name="t")

    class LosesFirstAnswer(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner, self.lost = inner, 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if request.url.path == "/v1/agent/register" and not self.lost:
                self.lost += 1
                raise httpx.ReadTimeout("the answer never came", request=request)
            return response

    async def scenario() -> None:
        transport = LosesFirstAnswer(httpx.ASGITransport(app=create_app(state)))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            agent = Agent(server_url="http://cp", join_token=secret, spec=SPEC, runtime=SimRuntime(),
                          client=client, tokens=TokenStore(tmp_path))
            with pytest.raises(httpx.ReadTimeout):
                await agent.register()
            await agent.register()  # what the agent's loop does next
            assert transport.lost == 1 and agent.hostnode_id is not None
            response = await client.post("/v1/agent/heartbeat", json={},
                                         headers={"Authorization": f"Bearer {agent.token}"})
            assert response.status_code == 200

    asyncio.run(scenario())
    with state.read() as session:
        assert [h.name for h in hostnodes.list_hostnodes(session)] == [SPEC.name]
