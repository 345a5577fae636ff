"""RFC 9457 problem documents for every error, with a stable `code` and the field at fault."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from coldplate.services.errors import ServiceError

log = logging.getLogger(__name__)

STATUS_BY_CODE = {
    "not_found": 404, "invalid_state": 409, "no_capacity": 409, "name_taken": 409,
    "validation_error": 422, "idempotency_conflict": 409, "unauthorized": 401, "forbidden_scope": 403,
    "wait_timeout": 408, "agent_error": 424, "budget_exceeded": 402,
}
CODE_BY_STATUS = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden_scope",
                  400: "bad_request", 415: "unsupported_media_type"}


def problem(status: int, code: str, detail: str, *, param: str | None = None,
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://coldplate.dev/problems/{code.replace('_', '-')}",
        "title": code.replace("_", " ").capitalize(), "status": status, "detail": detail, "code": code,
    }
    if param is not None:
        body["param"] = param
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


class ApiProblem(Exception):
    """An error the API itself raises (not a service): status, code and detail."""

    def __init__(self, status: int, code: str, detail: str, param: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.param = status, code, detail, param


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """The field's dotted name; only the first element says where it came from (body, query, ...)."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return problem(STATUS_BY_CODE.get(exc.code, 400), exc.code, exc.detail, param=exc.param)

    @app.exception_handler(ApiProblem)
    async def _api(_: Request, exc: ApiProblem) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, param=exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"param": _field(e.get("loc", ())), "detail": e.get("msg", "invalid")} for e in exc.errors()]
        first = errors[0] if errors else {"param": "body", "detail": "invalid request"}
        return problem(422, "validation_error", f"{first['param']}: {first['detail']}", param=first["param"],
                       errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = CODE_BY_STATUS.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "internal_error", "an internal error occurred; it has been logged")
