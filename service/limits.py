"""Request body limits enforced before FastAPI reads (and spools) the body.

A declared Content-Length over the limit is refused at once; a chunked body is counted as it
arrives and cut off at the limit. Either way the answer is a 413 problem+json.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file
JSON_LIMIT = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised from receive(); an HTTPException so that FastAPI's body parsing re-raises it as is."""

    def __init__(self, limit: int, path: str) -> None:
        super().__init__(413, f"the body exceeds the limit of {limit} bytes for {path} {_hint(limit)}")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(scope, send, int(declared), limit)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit, scope["path"])
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reject(scope, send, None, limit)


def _hint(limit: int) -> str:
    if limit <= JSON_LIMIT:
        return "(a job spec is a small JSON object; see /docs)"
    return "(raise FINE_MAX_UPLOAD_BYTES on the server for bigger uploads)"


async def _reject(scope: Scope, send: Send, declared: int | None, limit: int) -> None:
    size = f"{declared} bytes" if declared is not None else "the body"
    body = json.dumps({
        "type": "https://fine-zoo.invalid/problems/upload-too-large",
        "title": "Content Too Large",
        "status": 413,
        "detail": f"{size} exceeds the limit of {limit} bytes for {scope['path']} {_hint(limit)}",
        "instance": scope["path"],
    }).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
