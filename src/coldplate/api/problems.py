"""RFC 9457 problem documents for every error, with a stable `code` and the field at fault.

Codes, their statuses and `type` URIs come from the one registry in `services/errors.py`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from coldplate.services.errors import CODE_BY_STATUS, CODES, Code, ServiceError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"


class FieldProblem(BaseModel):
    param: str
    detail: str


class Problem(BaseModel):
    """What every error answers (RFC 9457), with `code` from the registry and `param` naming the field."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    param: str | None = None
    errors: list[FieldProblem] | None = None


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {MEDIA_TYPE: {"schema": Problem.model_json_schema()}}}


# The errors any route may answer, for the OpenAPI document (routers pass it as `responses=`).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": _problem_response("A problem with the request (bad input, authentication, state, capacity)"),
    "5XX": _problem_response("A server error (a bug: it is logged)"),
}


def _code(code: str) -> Code:
    return CODES.get(code) or CODES["internal_error"]


def problem(status: int, code: str, detail: str, *, param: str | None = None,
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": _code(code).type_uri(code), "title": code.replace("_", " ").capitalize(), "status": status,
        "detail": detail, "code": code,
    }
    if param is not None:
        body["param"] = param
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


class ApiProblem(Exception):
    """An error the API itself raises (not a service): a registered code, its detail and field."""

    def __init__(self, status: int, code: str, detail: str, param: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.param = status, code, detail, param


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """The field's dotted name; only the first element says where it came from (body, query, ...)."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _printable(text: str) -> str:
    """An error message that quotes the bad input must not carry it back unencodable."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return problem(_code(exc.code).status, exc.code, _printable(exc.detail), param=exc.param)

    @app.exception_handler(ApiProblem)
    async def _api(_: Request, exc: ApiProblem) -> JSONResponse:
        return problem(exc.status, exc.code, _printable(exc.detail), param=exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"param": _printable(_field(e.get("loc", ()))), "detail": _printable(str(e.get("msg", "invalid")))}
                  for e in exc.errors()]
        first = errors[0] if errors else {"param": "body", "detail": "invalid request"}
        return problem(422, "validation_error", f"{first['param']}: {first['detail']}", param=first["param"],
                       errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = CODE_BY_STATUS.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
        return problem(exc.status_code, code, _printable(str(exc.detail)),
                       headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "internal_error", "an internal error occurred; it has been logged")
