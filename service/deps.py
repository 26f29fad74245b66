"""Request dependencies (Annotated aliases, as in the full-stack-fastapi-template).

FastAPI runs a plain `def` dependency in the thread pool, and a generator dependency there twice
(enter and exit): a thread hop each, which under load cost more than the work they carry (issue 17,
bench/results/api_rps/). So whatever does no I/O is `async def` and runs on the event loop; only the
key lookup (a query) and the routes themselves go to the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from learngene_store.accounts import authenticate
from learngene_store.blobs import BlobStore
from learngene_store.db import get_engine, session_factory
from learngene_store.models import User
from service.errors import Problem
from service.settings import ApiSettings

MAX_KEY_LENGTH = 128


async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request. Opening one does no I/O (it connects at its first query, in the
    route's thread). Closing it returns the connection to the pool after a rollback: on SQLite a
    local call of microseconds, done here; on a server database a round trip, done in the pool."""
    state = request.app.state
    if state.sessions is None:  # the factory is looked up once (resolving the database URL touches the disk)
        state.sessions = session_factory(state.settings)
        state.sqlite = get_engine(state.settings).dialect.name == "sqlite"
    session = state.sessions()
    try:
        yield session
    finally:
        if state.sqlite:
            session.close()
        else:
            await run_in_threadpool(session.close)


SessionDep = Annotated[Session, Depends(get_session)]


async def get_store(request: Request) -> BlobStore:
    return request.app.state.store


StoreDep = Annotated[BlobStore, Depends(get_store)]


async def get_celery(request: Request) -> Celery:
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


async def get_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Problem(403, f"user {user.name!r} is not an admin; only admins do this", type_="admin-only")
    return user


AdminUser = Annotated[User, Depends(get_admin)]


async def get_writer(request: Request, user: CurrentUser) -> User:
    """The caller of a write (POST/PUT), counted against the write rate."""
    request.app.state.write_rate.hit(user)
    return user


WriterDep = Annotated[User, Depends(get_writer)]


async def get_owner(user: CurrentUser) -> str:
    """The name that owns what this request creates."""
    return user.name


OwnerDep = Annotated[str, Depends(get_owner)]


# Hard limits on identifiers before any work (the columns are String(64) / String(128)).
JobId = Annotated[str, Path(max_length=64, description="job id")]
CheckpointId = Annotated[str, Path(max_length=64, description="checkpoint id")]
DatasetId = Annotated[str, Path(max_length=64, description="dataset id")]
LearngeneId = Annotated[str, Path(max_length=128, description="learngene id")]
IdempotencyKey = Annotated[str | None, Header(max_length=256)]


async def require_json(content_type: Annotated[str | None, Header()] = None) -> None:
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise Problem(415, f"send the body as JSON with Content-Type: application/json "
                           f"(got {content_type or 'no Content-Type'})")


JsonBody = Depends(require_json)
