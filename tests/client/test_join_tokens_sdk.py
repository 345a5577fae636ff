"""SDK join-token calls: request shapes against a stand-in server (httpx.MockTransport); the SDK and
CLI against the real server are in tests/e2e/test_credentials_e2e.py."""

from __future__ import annotations

import asyncio
import json

import httpx

from coldplate import AsyncClient, Client

TOKEN = {"id": "jt_1", "name": "rack", "created_at": "2026-01-01T00:00:00Z", "expires_at": None, "max_uses": 2,
         "uses": 0, "revoked_at": None, "state": "active"}


def handler(seen: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.method == "POST":
            return httpx.Response(201, json={**TOKEN, "token": "cpj_secret"})
        if request.url.path.endswith("/jt_1"):
            return httpx.Response(200, json=TOKEN)
        return httpx.Response(200, json={"data": [TOKEN]})

    return httpx.MockTransport(answer)


def test_sync_join_token_calls() -> None:
    seen: list[httpx.Request] = []
    client = Client("http://cp", "cp_admin", transport=handler(seen))
    created = client.create_join_token("rack", max_uses=2)
    assert created.token == "cpj_secret" and created.max_uses == 2 and created.state == "active"
    listed = client.list_join_tokens()
    assert [t.id for t in listed] == ["jt_1"] and listed[0].token is None
    client.revoke_join_token("jt_1")
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/v1/join-tokens"), ("GET", "/v1/join-tokens"), ("DELETE", "/v1/join-tokens/jt_1")]
    assert json.loads(seen[0].content) == {"name": "rack", "max_uses": 2}  # None fields are not sent


def test_async_join_token_calls() -> None:
    seen: list[httpx.Request] = []

    async def run() -> None:
        async with AsyncClient("http://cp", "cp_admin", transport=handler(seen)) as client:
            await client.create_join_token(expires_in_hours=1.5, expires_at=None)
            assert (await client.get_join_token("jt_1")).uses == 0
            await client.revoke_join_token("jt_1")

    asyncio.run(run())
    assert json.loads(seen[0].content) == {"expires_in_hours": 1.5}
    assert [(r.method, r.url.path) for r in seen][1:] == [("GET", "/v1/join-tokens/jt_1"),
                                                         ("DELETE", "/v1/join-tokens/jt_1")]
