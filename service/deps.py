"""Request dependencies (Annotated aliases, as in the full-stack-fastapi-template)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from learngene_store.accounts import authenticate
from learngene_store.blobs import BlobStore
from learngene_store.db import session_factory
from learngene_store.models import User
from service.errors import Problem
from service.settings import ApiSettings

MAX_KEY_LENGTH = 128


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


bearer = HTTPBearer(auto_error=False, description="an API key: `fine users add NAME` prints one; embedded "
                                                   "mode writes an admin key to $FINE_HOME/admin.key")
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def get_user(session: SessionDep,
             credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User:
    """The caller, from `Authorization: Bearer <key>`; 401 without a valid, unrevoked key."""
    if credentials is None:
        raise Problem(401, "send an API key as 'Authorization: Bearer <key>' (an admin creates one with "
                           "`fine users add NAME`; embedded mode writes one to $FINE_HOME/admin.key)",
                      type_="unauthenticated", headers=UNAUTHORIZED)
    key = credentials.credentials
    user = authenticate(session, key) if len(key) <= MAX_KEY_LENGTH else None
    if user is None:
        raise Problem(401, "the API key is unknown or revoked; ask an admin for a new one (`fine users add`)",
                      type_="invalid-key", headers=UNAUTHORIZED)
    return user


CurrentUser = Annotated[User, Depends(get_user)]


def get_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Problem(403, f"user {user.name!r} is not an admin; only admins do this", type_="admin-only")
    return user


AdminUser = Annotated[User, Depends(get_admin)]


def get_writer(request: Request, user: CurrentUser) -> User:
    """The caller of a write (POST/PUT), counted against the write rate."""
    request.app.state.write_rate.hit(user)
    return user


WriterDep = Annotated[User, Depends(get_writer)]


def get_owner(user: CurrentUser) -> str:
    """The name that owns what this request creates."""
    return user.name


OwnerDep = Annotated[str, Depends(get_owner)]


# Hard limits on identifiers before any work (the columns are String(64) / String(128)).
JobId = Annotated[str, Path(max_length=64, description="job id")]
CheckpointId = Annotated[str, Path(max_length=64, description="checkpoint id")]
DatasetId = Annotated[str, Path(max_length=64, description="dataset id")]
LearngeneId = Annotated[str, Path(max_length=128, description="learngene id")]
IdempotencyKey = Annotated[str | None, Header(max_length=256)]


def require_json(content_type: Annotated[str | None, Header()] = None) -> None:
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise Problem(415, f"send the body as JSON with Content-Type: application/json "
                           f"(got {content_type or 'no Content-Type'})")


JsonBody = Depends(require_json)
