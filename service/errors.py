"""RFC 9457 problem details for every error, including FastAPI's own 404/405/422 and bad JSON."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.limits import BodyTooLarge

PROBLEM = "application/problem+json"
TYPE_BASE = "https://fine-zoo.invalid/problems/"
DB_RETRY_AFTER = 5  # seconds a client should wait when the database is down
log = logging.getLogger(__name__)


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem+json document."""

    def __init__(self, status: int, detail: str, *, type_: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_
        self.title = title
        self.headers = headers or {}
        self.extra = extra


def problem_response(request: Request, status: int, detail: str, *, type_: str | None = None,
                     title: str | None = None, headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": TYPE_BASE + (type_ or phrase.lower().replace(" ", "-").replace("'", "")),
        "title": title or phrase,
        "status": status,
        "detail": detail,
        "instance": str(request.url.path),
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _validation_detail(errors: list[dict[str, Any]]) -> tuple[int, str, list[dict[str, str]]]:
    for e in errors:
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            return 400, f"the request body is not valid JSON ({ctx.get('error', 'parse error')}); " \
                        "send a JSON object with Content-Type: application/json", []
    items = []
    for e in errors:
        field = _loc(e.get("loc", ()))
        msg = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field; remove it (see /docs for the accepted fields)"
        elif e.get("type") == "missing":
            msg = "required field is missing"
        elif e.get("type") == "model_attributes_type" or e.get("type") == "dict_type":
            msg = "the request body must be a JSON object"
        items.append({"field": field, "message": msg})
    detail = "; ".join(f"{i['field']}: {i['message']}" for i in items)
    return 422, detail, items


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts for this path (Starlette reports only the first route's)."""
    methods: set[str] = set()
    scope = {**request.scope, "method": "__none__"}

    def visit(routes: list) -> None:  # type: ignore[type-arg]
        for route in routes:
            inner = getattr(route, "original_router", None)  # FastAPI's included routers
            if inner is not None:
                visit(list(inner.routes))
                continue
            try:
                match, _ = route.matches(scope)
            except Exception:
                continue
            if match != Match.NONE:
                methods.update(getattr(route, "methods", None) or ())

    visit(list(request.app.routes))
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, type_=exc.type, title=exc.title,
                                headers=exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.url.path}; the API lives under /v1 (see /docs)"
        headers = dict(exc.headers or {})
        if isinstance(exc, BodyTooLarge):
            return problem_response(request, 413, detail, type_="upload-too-large")
        if exc.status_code == 405:
            allow = _allowed_methods(request) or headers.get("Allow", "")
            headers["Allow"] = allow
            detail = f"{request.method} is not allowed on {request.url.path}; use {allow}"
        return problem_response(request, exc.status_code, detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, detail, items = _validation_detail(list(exc.errors()))
        extra = {"errors": items} if items else {}
        return problem_response(request, status, detail, **extra)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(SQLAlchemyTimeout)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(request, 503, "the registry database is unavailable; nothing was changed by this "
                                f"request, retry in {DB_RETRY_AFTER} s", type_="database-unavailable",
                                headers={"Retry-After": str(DB_RETRY_AFTER)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, f"internal error ({type(exc).__name__}); the request was "
                                "not completed, retry later or report it with the time of the request")
