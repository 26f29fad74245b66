"""Browse and register learngene sets."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.formparsers import MultiPartException

from fine.spec import PretrainSpec
from learngene_store.accounts import aliases_of
from learngene_store.blobs import BlobCorrupt, BlobMissing, BlobStore
from learngene_store.catalog import DuplicateLearngene, register_learngene
from learngene_store.learngene_meta import LearngeneMetaError, header_metadata, normalize, read_safetensors_header
from learngene_store.models import Checkpoint, Learngene, LearngeneFile, User
from service.access import can_see_learngene, owned, owns, visible_learngenes
from service.deps import (
    CeleryDep,
    CurrentUser,
    IdempotencyKey,
    JsonBody,
    LearngeneId,
    SessionDep,
    SettingsDep,
    StoreDep,
    WriterDep,
)
from service.downloads import serve_blob
from service.errors import Problem
from service.jobs_view import job_out
from service.quotas import check_job_quota, check_storage_quota
from service.schemas import DescendantOut, LearngeneDetail, LearngeneOut, PictureOut, TagsIn
from service.settings import ApiSettings
from service.submit import submit
from service.uploads import spooled
from service.validation import validate_pretrain

router = APIRouter(prefix="/v1/learngenes", tags=["learngenes"])


def _summary(lg: Learngene, descendants: int, aliases: list[str]) -> dict:
    return dict(id=lg.id, owner=lg.owner, public=lg.public, aliases=aliases, sha256=lg.sha256, bytes=lg.bytes,
                hidden_size=lg.hidden_size, head_dim=lg.head_dim,
                depth=lg.depth, rank=lg.rank, patch_size=lg.patch_size, image_size=lg.image_size,
                in_channels=lg.in_channels, num_classes=lg.num_classes, source_dataset=lg.source_dataset,
                steps=lg.steps, widths=lg.widths, created_at=lg.created_at, descendants_count=descendants,
                tags=list(lg.tags or []),
                links={"self": f"/v1/learngenes/{lg.id}", "file": f"/v1/learngenes/{lg.id}/file"})


def _get(session: SessionDep, user: User, lg_id: str) -> Learngene:
    lg = session.get(Learngene, lg_id)
    if lg is None or not can_see_learngene(user, lg):
        raise Problem(404, f"no learngene {lg_id!r}; list them with GET /v1/learngenes",
                      type_="learngene-not-found")
    return lg


@router.get("", response_model=list[LearngeneOut])
def list_learngenes(session: SessionDep, user: CurrentUser,
                    tag: Annotated[str | None, Query(max_length=32, description="only sets with this tag")] = None,
                    ) -> list[LearngeneOut]:
    """The public learngene sets and yours, newest first; `aliases` shows which one is the `default`
    for new jobs (an admin moves it with PUT /v1/aliases/default)."""
    counts = dict(session.execute(owned(select(Checkpoint.learngene_id, func.count()), Checkpoint, user)
                                  .group_by(Checkpoint.learngene_id)).all())
    aliases = aliases_of(session)
    rows = session.execute(visible_learngenes(select(Learngene), user)
                           .order_by(Learngene.created_at.desc(), Learngene.id.desc())).scalars()
    # Tags are filtered here, not in SQL: JSON containment differs between SQLite and PostgreSQL.
    return [LearngeneOut(**_summary(lg, counts.get(lg.id, 0), aliases.get(lg.id, []))) for lg in rows
            if tag is None or tag in (lg.tags or [])]


@router.put("/{lg_id}/tags", response_model=LearngeneOut, dependencies=[JsonBody],
            responses={403: {"description": "not your set"}, 404: {}})
def put_tags(lg_id: LearngeneId, body: TagsIn, session: SessionDep, user: WriterDep) -> LearngeneOut:
    """Replace the tags of one of your learngene sets (an admin's: any set)."""
    lg = _get(session, user, lg_id)
    if not owns(user, lg.owner):
        raise Problem(403, f"learngene {lg_id} belongs to {lg.owner}: only its owner or an admin tags it",
                      type_="not-your-learngene")
    lg.tags = sorted(set(body.tags))
    session.commit()
    count = session.execute(owned(select(func.count()).select_from(Checkpoint), Checkpoint, user)
                            .where(Checkpoint.learngene_id == lg.id)).scalar_one()
    return LearngeneOut(**_summary(lg, count, aliases_of(session).get(lg.id, [])))


@router.get("/{lg_id}", response_model=LearngeneDetail)
def get_learngene(lg_id: LearngeneId, session: SessionDep, user: CurrentUser) -> LearngeneDetail:
    lg = _get(session, user, lg_id)
    rows = session.execute(owned(select(Checkpoint), Checkpoint, user).where(Checkpoint.learngene_id == lg.id)
                           .order_by(Checkpoint.created_at.desc()).limit(500)).scalars().all()
    desc = [DescendantOut(checkpoint_id=c.id, job_id=c.job_id, depth=c.depth, hidden_size=c.hidden_size,
                          dataset=c.dataset, method=c.method, created_at=c.created_at) for c in rows]
    pictures = [PictureOut(name=f.name, media_type=f.media_type, sha256=f.sha256, bytes=f.bytes,
                           url=f"/v1/learngenes/{lg.id}/pictures/{f.name}") for f in _pictures(session, lg.id)]
    return LearngeneDetail(**_summary(lg, len(desc), aliases_of(session).get(lg.id, [])), meta=lg.meta,
                           descendants=desc, pictures=pictures)


def _pictures(session: Session, lg_id: str) -> list[LearngeneFile]:
    return list(session.execute(select(LearngeneFile).where(LearngeneFile.learngene_id == lg_id)
                                .order_by(LearngeneFile.name)).scalars())


@router.head("/{lg_id}/pictures/{name}", include_in_schema=False)
@router.get("/{lg_id}/pictures/{name}", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 304: {}, 404: {}})
def learngene_picture(lg_id: LearngeneId, name: str, request: Request, session: SessionDep, store: StoreDep,
                      user: CurrentUser) -> Response:
    """A picture of the set (`curve.png`: its pre-training loss; `samples_w<width>.png`: samples at each
    offered width), inline; `ETag` = sha256."""
    _get(session, user, lg_id)
    f = next((p for p in _pictures(session, lg_id) if p.name == name), None)
    if f is None:
        have = ", ".join(p.name for p in _pictures(session, lg_id)) or "none"
        raise Problem(404, f"learngene {lg_id} has no picture {name!r}; it has: {have}", type_="picture-not-found")
    try:
        path = store.local_path(f.sha256)
    except (BlobCorrupt, BlobMissing) as e:
        raise Problem(503, str(e), type_="blob-unavailable") from None
    return serve_blob(request, path, f.sha256, f.media_type, f.name, inline=True)


@router.head("/{lg_id}/file", include_in_schema=False)
@router.get("/{lg_id}/file", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
def download_learngene(lg_id: LearngeneId, request: Request, session: SessionDep, store: StoreDep,
                       user: CurrentUser) -> Response:
    lg = _get(session, user, lg_id)
    try:
        path = store.local_path(lg.sha256)
    except (BlobCorrupt, BlobMissing) as e:
        raise Problem(503, str(e), type_="blob-unavailable") from None
    return serve_blob(request, path, lg.sha256, "application/octet-stream", f"{lg.id}.safetensors")


REGISTER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary",
                                        "description": "learngene.safetensors"},
                               "config": {"type": "string", "description": "config.json sidecar as JSON text"}}}},
            "application/json": {"schema": PretrainSpec.model_json_schema()},
        },
    },
    "responses": {"201": {"description": "uploaded set registered"},
                  "202": {"description": "pre-training job queued; it registers the set when it succeeds"}},
}


@router.post("", status_code=201, response_model=None, openapi_extra=REGISTER_DOC,
             responses={409: {"description": "already registered"}, 413: {}, 415: {}, 422: {}})
async def register(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep,
                   celery: CeleryDep, user: WriterDep, idempotency_key: IdempotencyKey = None) -> Response:
    """Register a learngene set, either

    - **upload** (`multipart/form-data`): the safetensors `file`, its metadata in the file's
      `__metadata__` or in a `config` field (the `config.json` sidecar) -> 201; or
    - **pre-train** (`application/json`, a `PretrainSpec`): queue a pre-training job -> 202 +
      `Location` of the job; when it succeeds its learngene set is registered and linked from it.

    An admin's sets are public; anyone else's are private to them. Neither moves the `default` alias.
    """
    owner = user.name
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            spec = PretrainSpec.model_validate_json(await request.body())
        except ValidationError as e:
            raise RequestValidationError(e.errors(include_url=False)) from None
        response = Response(status_code=202)
        job = await run_in_threadpool(
            submit, session, settings, celery, response, owner=owner, idempotency_key=idempotency_key,
            kind="pretrain", body=spec.model_dump(),
            build=lambda: _pretrain_job(session, settings, user, spec))
        body = job_out(job).model_dump(mode="json")
        headers = {k: v for k, v in response.headers.items() if k in ("location", "idempotent-replayed")}
        return JSONResponse(body, status_code=202, headers=headers)
    if media != "multipart/form-data":
        raise Problem(415, "POST a learngene set as multipart/form-data (field 'file', optional 'config'), or a "
                           f"pre-training spec as application/json (got {media or 'no Content-Type'})")
    try:
        form = await request.form(max_files=1, max_fields=4)
    except MultiPartException as e:
        raise Problem(400, f"malformed multipart body ({e.message}); send field 'file' (and optionally 'config')",
                      type_="bad-multipart") from None
    upload = form.get("file")
    config = form.get("config")
    if not isinstance(upload, StarletteUploadFile):
        raise Problem(422, "file: required field is missing; send the learngene.safetensors as form field 'file'",
                      type_="invalid-learngene")
    if config is not None and not isinstance(config, str):
        raise Problem(422, "config: send the config.json sidecar as a text field", type_="invalid-learngene")
    lg = await run_in_threadpool(_register_upload, session, store, settings, user, upload, config)
    detail = LearngeneDetail(**_summary(lg, 0, []), meta=lg.meta, descendants=[])
    return JSONResponse(detail.model_dump(mode="json"), status_code=201,
                        headers={"Location": f"/v1/learngenes/{lg.id}"})


def _pretrain_job(session: Session, settings: ApiSettings, user: User, spec: PretrainSpec) -> dict:
    """The Job columns of a valid pre-training request within the caller's quotas."""
    resolved = validate_pretrain(session, spec, user)
    check_job_quota(session, settings, user, spec.steps)
    return {"spec": resolved, "learngene_id": None, "dataset": spec.dataset, "method": "pretrain",
            "total": spec.steps}


def _register_upload(session: Session, store: BlobStore, settings: ApiSettings, user: User,
                     file: StarletteUploadFile, config: str | None) -> Learngene:
    sidecar: dict = {}
    if config:
        try:
            sidecar = json.loads(config)
        except json.JSONDecodeError as e:
            raise Problem(422, f"config is not valid JSON ({e})", type_="invalid-learngene") from None
        if not isinstance(sidecar, dict):
            raise Problem(422, "config must be a JSON object", type_="invalid-learngene")
    with spooled(file, settings.max_upload_bytes, settings.work_dir, "learngene.safetensors") as path:
        check_storage_quota(session, settings, user, path.stat().st_size)
        try:
            header = read_safetensors_header(path)
            _check_layout(header, path)
            meta = header_metadata(header)
            meta.update(sidecar)
            meta = normalize(meta, file.filename or "upload")
            return register_learngene(session, store, path, meta, owner=user.name, public=user.is_admin)
        except LearngeneMetaError as e:
            raise Problem(422, str(e), type_="invalid-learngene") from None
        except DuplicateLearngene as e:
            raise Problem(409, f"{e}; see /v1/learngenes/{e.existing.id}", type_="learngene-exists",
                          headers={"Location": f"/v1/learngenes/{e.existing.id}"}) from None


def _check_layout(header: dict, path) -> None:  # type: ignore[no-untyped-def]
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise LearngeneMetaError(f"tensor {name!r} has no valid data_offsets: not a safetensors file") from None
    if 8 + n + end != size:
        raise LearngeneMetaError(f"file is {size} bytes but its header describes {8 + n + end}: truncated or "
                                 "not a safetensors file")
