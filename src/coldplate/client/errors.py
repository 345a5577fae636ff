"""Typed SDK errors: each problem `code` raises the class the registry (services/errors.py) names."""

from __future__ import annotations

from typing import Any

import httpx

from coldplate.services.errors import CODES


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
class ConflictError(ColdplateError): ...
class AgentError(ColdplateError): ...
class BudgetExceededError(ColdplateError): ...


_CLASSES: dict[str, type[ColdplateError]] = {cls.__name__: cls for cls in (
    ColdplateError, NotFoundError, NoCapacityError, InvalidStateError, ValidationError, AuthError,
    IdempotencyConflictError, WaitTimeoutError, ConflictError, AgentError, BudgetExceededError)}
_BY_CODE: dict[str, type[ColdplateError]] = {code: _CLASSES[c.sdk_error] for code, c in CODES.items()}


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
