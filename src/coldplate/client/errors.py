"""Typed SDK errors, one per problem `code`."""

from __future__ import annotations

from typing import Any

import httpx


class ColdplateError(Exception):
    def __init__(self, status: int, code: str, detail: str, param: str | None = None,
                 problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"[{code}] {detail}")
        self.status, self.code, self.detail, self.param = status, code, detail, param
        self.problem = problem or {}


class NotFoundError(ColdplateError): ...
class NoCapacityError(ColdplateError): ...
class InvalidStateError(ColdplateError): ...
class ValidationError(ColdplateError): ...
class AuthError(ColdplateError): ...
class IdempotencyConflictError(ColdplateError): ...
class WaitTimeoutError(ColdplateError): ...
class BudgetExceededError(ColdplateError): ...


_BY_CODE: dict[str, type[ColdplateError]] = {
    "not_found": NotFoundError, "no_capacity": NoCapacityError, "invalid_state": InvalidStateError,
    "validation_error": ValidationError, "unauthorized": AuthError, "forbidden_scope": AuthError,
    "idempotency_conflict": IdempotencyConflictError, "wait_timeout": WaitTimeoutError,
    "budget_exceeded": BudgetExceededError,
}


def raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            raise ValueError
    except ValueError:
        problem = {"code": "http_error", "detail": response.text[:500] or response.reason_phrase}
    code = str(problem.get("code", "http_error"))
    cls = _BY_CODE.get(code, AuthError if response.status_code in (401, 403) else ColdplateError)
    raise cls(response.status_code, code, str(problem.get("detail", "")), problem.get("param"), problem)
