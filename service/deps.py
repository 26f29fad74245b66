"""Request dependencies (Annotated aliases, as in the full-stack-fastapi-template)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from learngene_store.blobs import BlobStore
from learngene_store.db import session_factory
from service.errors import Problem
from service.settings import ApiSettings


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_factory(settings)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_store(request: Request) -> BlobStore:
    return request.app.state.store


StoreDep = Annotated[BlobStore, Depends(get_store)]


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_owner() -> str:
    """Placeholder for authentication: every caller is 'anonymous' until auth exists."""
    return "anonymous"


OwnerDep = Annotated[str, Depends(get_owner)]


def require_json(content_type: Annotated[str | None, Header()] = None) -> None:
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise Problem(415, f"send the body as JSON with Content-Type: application/json "
                           f"(got {content_type or 'no Content-Type'})")


JsonBody = Depends(require_json)
