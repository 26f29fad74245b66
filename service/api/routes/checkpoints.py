"""GET /v1/checkpoints (filters, cursor pages), /v1/checkpoints/{id} and its files (dense, factored,
diffusers, samples, config, metrics, curve, losses), and its pictures (samples.png, curve.png, curve.json)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select

from learngene_store.blobs import BlobCorrupt, BlobMissing
from learngene_store.collect import delete_checkpoint
from learngene_store.models import Checkpoint, User
from service.access import owned, owns
from service.deps import CheckpointId, CurrentUser, SessionDep, StoreDep, WriterDep
from service.downloads import serve_blob
from service.errors import Problem
from service.pagination import newest_first
from service.schemas import CheckpointOut, FileOut, Page

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"])
Format = Literal["dense", "factored", "diffusers", "samples", "config", "metrics", "curve", "losses"]
PICTURES = {  # /v1/checkpoints/{id}/<name> -> (file format, what it is)
    "samples.png": ("samples", "The sample grid, one row per class (PNG)"),
    "curve.png": ("curve", "The sigma-stage and fine-tuning loss per step (PNG)"),
    "curve.json": ("losses", "The numbers of curve.png: per phase, steps and losses (JSON)"),
}


def _get(session: SessionDep, user: User, ckpt_id: str) -> Checkpoint:
    ckpt = session.execute(select(Checkpoint).where(Checkpoint.id == ckpt_id)).scalar_one_or_none()
    if ckpt is None or not owns(user, ckpt.owner):
        raise Problem(404, f"no checkpoint {ckpt_id!r}; a succeeded job links its checkpoint_id",
                      type_="checkpoint-not-found")
    return ckpt


def checkpoint_out(ckpt: Checkpoint) -> CheckpointOut:
    files = [FileOut(format=f.format, filename=f.filename, media_type=f.media_type, sha256=f.sha256,
                     bytes=f.bytes, url=f"/v1/checkpoints/{ckpt.id}/file?format={f.format}")
             for f in sorted(ckpt.files, key=lambda f: f.format)]
    return CheckpointOut(id=ckpt.id, job_id=ckpt.job_id, learngene=ckpt.learngene_id, method=ckpt.method,
                         dataset=ckpt.dataset, depth=ckpt.depth, hidden_size=ckpt.hidden_size,
                         config=ckpt.config, metrics=ckpt.metrics, metrics_status=ckpt.metrics_status,
                         metrics_error=ckpt.metrics_error, metrics_at=ckpt.metrics_at, files=files,
                         created_at=ckpt.created_at)


@router.get("", response_model=Page[CheckpointOut])
def list_checkpoints(session: SessionDep, request: Request, response: Response, user: CurrentUser,
                     dataset: str | None = None, learngene: str | None = None, method: str | None = None,
                     depth: Annotated[int | None, Query(ge=1)] = None,
                     hidden_size: Annotated[int | None, Query(ge=1)] = None,
                     cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Page[CheckpointOut]:
    """The caller's checkpoints (an admin's: everyone's), newest first, filtered by any of dataset, learngene,
    method, depth and hidden_size; pass `next_cursor` back as `cursor` for the next page."""
    q = owned(select(Checkpoint), Checkpoint, user)
    for col, value in ((Checkpoint.dataset, dataset), (Checkpoint.learngene_id, learngene),
                       (Checkpoint.method, method), (Checkpoint.depth, depth), (Checkpoint.hidden_size, hidden_size)):
        if value is not None:
            q = q.where(col == value)
    rows, next_cursor = newest_first(session, q, Checkpoint, request, response, cursor, limit)
    return Page[CheckpointOut](items=[checkpoint_out(c) for c in rows], next_cursor=next_cursor)


@router.get("/{ckpt_id}", response_model=CheckpointOut)
def get_checkpoint(ckpt_id: CheckpointId, session: SessionDep, user: CurrentUser) -> CheckpointOut:
    return checkpoint_out(_get(session, user, ckpt_id))


@router.delete("/{ckpt_id}", status_code=204, response_class=Response, responses={404: {}})
def delete(ckpt_id: CheckpointId, session: SessionDep, store: StoreDep, user: WriterDep) -> Response:
    """Delete one of your checkpoints; its files' blobs go too unless something else holds the same bytes.
    The job that built it stays, without a checkpoint."""
    ckpt = _get(session, user, ckpt_id)
    if ckpt.owner != user.name:
        raise Problem(404, f"no checkpoint {ckpt_id!r} of yours", type_="checkpoint-not-found")
    delete_checkpoint(session, store, ckpt)
    return Response(status_code=204)


@router.head("/{ckpt_id}/file", include_in_schema=False)
@router.get("/{ckpt_id}/file", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 304: {}, 409: {}, 416: {}})
def download(ckpt_id: CheckpointId, request: Request, session: SessionDep, store: StoreDep, user: CurrentUser,
             format: Format = "dense") -> Response:
    """The checkpoint file; `ETag` is its sha256, `Range` resumes a partial download."""
    return _serve(request, _get(session, user, ckpt_id), store, format)


def _picture_route(name: str, fmt: str) -> None:
    """GET|HEAD /v1/checkpoints/{id}/<name>: one picture (or its numbers) shown inline, ETag-cacheable."""

    def picture(ckpt_id: CheckpointId, request: Request, session: SessionDep, store: StoreDep,
                user: CurrentUser) -> Response:
        return _serve(request, _get(session, user, ckpt_id), store, fmt, inline=True)

    picture.__name__ = "picture_" + name.replace(".", "_")
    picture.__doc__ = f"{PICTURES[name][1]}; `ETag` = sha256, so `If-None-Match` answers 304."
    media = "image/png" if name.endswith(".png") else "application/json"
    router.head(f"/{{ckpt_id}}/{name}", include_in_schema=False)(picture)
    router.get(f"/{{ckpt_id}}/{name}", response_class=Response,
               responses={200: {"content": {media: {}}}, 304: {}, 404: {}, 409: {}})(picture)


def _serve(request: Request, ckpt: Checkpoint, store: StoreDep, format: str, inline: bool = False) -> Response:
    ckpt_id = ckpt.id
    f = ckpt.file(format)
    if f is None:
        have = ", ".join(sorted(x.format for x in ckpt.files))
        if format == "diffusers":
            detail = ("this checkpoint has no diffusers export (the worker that built it could not export "
                      f"that layout); available formats: {have}")
        elif format == "factored":
            detail = f"method {ckpt.method} produces no factored form; available formats: {have}"
        else:
            detail = f"checkpoint {ckpt_id} has no {format} file; available formats: {have}"
        raise Problem(409, detail, type_="format-unavailable")
    try:
        path = store.local_path(f.sha256)
    except BlobCorrupt as e:
        raise Problem(500, f"{e}; the file is withheld rather than served wrong", type_="blob-corrupt") from None
    except BlobMissing as e:
        raise Problem(503, f"{e}; the blob store may be misconfigured", type_="blob-missing") from None
    return serve_blob(request, path, f.sha256, f.media_type, f.filename, inline=inline)


for _name, (_fmt, _) in PICTURES.items():
    _picture_route(_name, _fmt)
