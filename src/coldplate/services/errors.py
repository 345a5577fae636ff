"""Errors services raise; the API maps each `code` to a status and a problem document."""

from __future__ import annotations


class ServiceError(Exception):
    code = "error"

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


class InvalidInput(ServiceError):
    code = "validation_error"


class IdempotencyConflict(ServiceError):
    code = "idempotency_conflict"


class Unauthorized(ServiceError):
    code = "unauthorized"


class ForbiddenScope(ServiceError):
    code = "forbidden_scope"


class BudgetExceeded(ServiceError):
    code = "budget_exceeded"
