"""The one registry of problem codes: every code the services and the API raise is registered,
with a status, a stable `type` URI and an SDK exception class; a compare-and-set that keeps
losing is a 409 problem, not a 500."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from coldplate.client import errors as sdk
from coldplate.services import capacity, errors
from coldplate.state import AppState
from tests.conftest import Fleet

SRC = Path(__file__).resolve().parents[2] / "src" / "coldplate"


def _service_errors() -> list[type[errors.ServiceError]]:
    found, todo = [], [errors.ServiceError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_service_error_code_is_registered_with_an_sdk_class() -> None:
    assert capacity.CasFailed in _service_errors()
    for cls in _service_errors():
        assert cls.code in errors.CODES, cls
    for code, entry in errors.CODES.items():
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code)
        assert entry.type_uri(code) == "https://coldplate.dev/problems/" + code.replace("_", "-")
        assert issubclass(getattr(sdk, entry.sdk_error), sdk.ColdplateError)


def test_codes_set_per_instance_are_registered() -> None:
    """A join token's refusal carries its reason as the code (the class says only `unauthorized`)."""
    from coldplate.services.join_tokens import _REFUSALS, JoinTokenRefused

    assert set(_REFUSALS) == {"revoked", "expired", "used_up"}
    for code, detail in _REFUSALS.values():
        assert errors.CODES[code].status == 401 and errors.CODES[code].sdk_error == "AuthError"
        assert JoinTokenRefused(code, detail).code == code


def test_every_code_the_api_raises_is_registered_with_its_status() -> None:
    raised = re.findall(r'ApiProblem\(\s*(\d{3}),\s*"([a-z_]+)"', "".join(
        p.read_text() for p in SRC.rglob("*.py")))
    assert raised, "the pattern finds the API's own problems"
    for status, code in raised:
        assert errors.CODES[code].status == int(status), code
    for status, code in errors.CODE_BY_STATUS.items():
        assert errors.CODES[code].status == status


@pytest.mark.parametrize("code", sorted(errors.CODES))
def test_the_sdk_raises_the_registered_class(code: str) -> None:
    status = errors.CODES[code].status
    response = httpx.Response(status, json={"code": code, "detail": "d", "param": "p"})
    with pytest.raises(sdk.ColdplateError) as raised:
        sdk.raise_for_problem(response)
    assert type(raised.value).__name__ == errors.CODES[code].sdk_error
    assert (raised.value.status, raised.value.code, raised.value.param) == (status, code, "p")


def test_a_lost_compare_and_set_is_a_409_problem(client: TestClient, fleet: Fleet, state: AppState,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    host = fleet.host("busy")
    iid = client.post("/v1/instances", json={"name": "a", "gpu": "h100"}).json()["id"]
    monkeypatch.setattr(capacity, "compare_and_set", lambda *a, **k: False)  # every write loses its race
    response = fleet.report(host, iid, "failed", failure_reason="boom")  # frees the GPUs: a compare-and-set
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "conflict" and response.json()["param"] == "id"
    assert client.get(f"/v1/instances/{iid}").json()["status"] == "provisioning"  # rolled back whole
