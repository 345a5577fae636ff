"""A cap on request bodies, enforced on the raw ASGI stream.

A declared `Content-Length` over the cap is answered 413 before a byte of the body is read; a
chunked body is counted as it arrives and refused the moment it passes the cap, so an oversize
request costs the server at most the cap in memory, never the whole upload.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coldplate.api.problems import problem


def _too_large(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes"


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status, detail = (413, _too_large(self.max_bytes)) if declared.isdigit() else (
                400, "Content-Length must be a number of bytes")
            code = "payload_too_large" if status == 413 else "bad_request"
            await problem(status, code, detail, param="body")(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # the route's body read fails: answered 413 by problems.py
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, limited, send)
