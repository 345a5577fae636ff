"""SDK request shapes and error mapping against a stand-in server (httpx.MockTransport).
The SDK against the real server is exercised by tests/e2e."""

from __future__ import annotations

import json

import httpx
import pytest

from coldplate import AsyncClient, Client
from coldplate.client import ColdplateError, InvalidStateError, NoCapacityError, ValidationError, WaitTimeoutError

INSTANCE = {"id": "inst_1", "name": "a", "project_id": "prj_1", "status": "ready",
            "gpu": {"type": "h100-80gb", "name": "NVIDIA H100 80GB", "count": 1}, "vcpus": 8, "memory_gb": 64,
            "disk_gb": 20, "image": "busybox", "price_per_hour": "2.200000", "created_at": "2026-01-01T00:00:00Z"}


def problem(status: int, code: str, param: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"type": "t", "title": "t", "status": status, "detail": f"{code} detail",
                                        "code": code, "param": param},
                          headers={"content-type": "application/problem+json"})


def test_create_sends_key_body_and_idempotency_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=INSTANCE)

    client = Client("http://cp/", "cp_key", transport=httpx.MockTransport(handler))
    inst = client.create_instance(name="a", gpu="h100", region=None, idempotency_key="k1")
    assert inst.id == "inst_1" and inst.gpu.count == 1
    request = seen[0]
    assert request.method == "POST" and request.url.path == "/v1/instances"
    assert request.headers["Authorization"] == "Bearer cp_key"
    assert request.headers["Idempotency-Key"] == "k1"
    assert json.loads(request.content) == {"name": "a", "gpu": "h100"}  # None fields are not sent


def test_list_follows_cursors_and_sends_filters() -> None:
    pages = {None: ({"data": [INSTANCE], "next_cursor": "c2"}), "c2": {"data": [INSTANCE], "next_cursor": None}}
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    client = Client("http://cp", "k", transport=httpx.MockTransport(handler))
    assert len(client.list_instances(status=["ready", "stopped"], label={"team": "a"})) == 2
    assert seen[0].params["status"] == "ready,stopped" and seen[0].params["label"] == "team=a"
    assert seen[1].params["cursor"] == "c2"


@pytest.mark.parametrize(("status", "code", "cls"), [
    (409, "no_capacity", NoCapacityError), (409, "invalid_state", InvalidStateError),
    (422, "validation_error", ValidationError), (418, "teapot", ColdplateError)])
def test_problems_become_typed_errors(status: int, code: str, cls: type[ColdplateError]) -> None:
    client = Client("http://cp", "k", transport=httpx.MockTransport(lambda _: problem(status, code, "gpu")))
    with pytest.raises(cls) as info:
        client.get_instance("a")
    assert info.value.code == code and info.value.status == status and info.value.param == "gpu"


def test_non_json_error_is_still_an_sdk_error() -> None:
    client = Client("http://cp", "k", transport=httpx.MockTransport(lambda _: httpx.Response(502, text="bad")))
    with pytest.raises(ColdplateError) as info:
        client.regions()
    assert info.value.status == 502


def test_wait_repolls_until_overall_timeout() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(float(request.url.params["timeout"]))
        if len(calls) < 3:
            return problem(408, "wait_timeout")
        return httpx.Response(200, json=INSTANCE)

    client = Client("http://cp", "k", transport=httpx.MockTransport(handler))
    assert client.wait_instance("a", timeout=100).status == "ready"
    assert len(calls) == 3 and all(0 < c <= 30 for c in calls)
    gone = Client("http://cp", "k", transport=httpx.MockTransport(lambda _: problem(408, "wait_timeout")))
    with pytest.raises(WaitTimeoutError):
        gone.wait_instance("a", timeout=0)


async def test_async_client_mirrors_sync() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stop"):
            assert json.loads(request.content) == {"force": True}
            return httpx.Response(200, json={**INSTANCE, "status": "draining"})
        return problem(409, "no_capacity")

    async with AsyncClient("http://cp", "k", transport=httpx.MockTransport(handler)) as client:
        assert (await client.stop_instance("a", force=True)).status == "draining"
        with pytest.raises(NoCapacityError):
            await client.create_instance(name="b", gpu="h100")
