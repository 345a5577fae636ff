"""Errors services raise, and the one registry of problem codes: code → HTTP status → SDK error.

`api/problems.py` answers every code with its status and `type` URI; `client/errors.py` raises
the SDK exception class named here. A code not in `CODES` is a bug (tests/services/test_errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass

PROBLEM_TYPE_BASE = "https://coldplate.dev/problems/"


@dataclass(frozen=True)
class Code:
    status: int
    sdk_error: str  # the class in coldplate.client.errors a client raises for it

    def type_uri(self, code: str) -> str:
        return PROBLEM_TYPE_BASE + code.replace("_", "-")


CODES: dict[str, Code] = {
    "bad_request": Code(400, "ValidationError"),
    "unauthorized": Code(401, "AuthError"),
    "join_token_expired": Code(401, "AuthError"),
    "join_token_used_up": Code(401, "AuthError"),
    "join_token_revoked": Code(401, "AuthError"),
    "forbidden": Code(403, "AuthError"),
    "forbidden_scope": Code(403, "AuthError"),
    "not_found": Code(404, "NotFoundError"),
    "method_not_allowed": Code(405, "ColdplateError"),
    "wait_timeout": Code(408, "WaitTimeoutError"),
    "invalid_state": Code(409, "InvalidStateError"),
    "no_capacity": Code(409, "NoCapacityError"),
    "name_taken": Code(409, "ConflictError"),
    "idempotency_conflict": Code(409, "IdempotencyConflictError"),
    "conflict": Code(409, "ConflictError"),
    "payload_too_large": Code(413, "ValidationError"),
    "unsupported_media_type": Code(415, "ValidationError"),
    "validation_error": Code(422, "ValidationError"),
    "budget_exceeded": Code(402, "BudgetExceededError"),
    "agent_error": Code(424, "AgentError"),
    "internal_error": Code(500, "ColdplateError"),
}
CODE_BY_STATUS: dict[int, str] = {400: "bad_request", 401: "unauthorized", 403: "forbidden_scope", 404: "not_found",
                                  405: "method_not_allowed", 413: "payload_too_large",
                                  415: "unsupported_media_type", 422: "validation_error"}


class ServiceError(Exception):
    code = "internal_error"

    def __init__(self, detail: str, *, param: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.param = param


class NotFound(ServiceError):
    code = "not_found"


class InvalidState(ServiceError):
    code = "invalid_state"


class NoCapacity(ServiceError):
    code = "no_capacity"


class NameTaken(ServiceError):
    code = "name_taken"


class Conflict(ServiceError):
    """A concurrent writer changed what this transaction read: `AppState.transact` runs it again."""

    code = "conflict"


class InvalidInput(ServiceError):
    code = "validation_error"


class IdempotencyConflict(ServiceError):
    code = "idempotency_conflict"


class Unauthorized(ServiceError):
    code = "unauthorized"


class ForbiddenScope(ServiceError):
    code = "forbidden_scope"


class Forbidden(ServiceError):
    """The caller is known but may not do this (e.g. take over another host's name)."""

    code = "forbidden"


class BudgetExceeded(ServiceError):
    code = "budget_exceeded"
