"""GET /v1/checkpoints/{id} and its files (dense, factored, diffusers, samples, config, metrics)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from learngene_store.blobs import BlobCorrupt, BlobMissing
from learngene_store.models import Checkpoint, User
from service.access import owns
from service.deps import CheckpointId, CurrentUser, SessionDep, StoreDep
from service.downloads import serve_blob
from service.errors import Problem
from service.schemas import CheckpointOut, FileOut

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"])
Format = Literal["dense", "factored", "diffusers", "samples", "config", "metrics"]


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
                         config=ckpt.config, metrics=ckpt.metrics, files=files, created_at=ckpt.created_at)


@router.get("/{ckpt_id}", response_model=CheckpointOut)
def get_checkpoint(ckpt_id: CheckpointId, session: SessionDep, user: CurrentUser) -> CheckpointOut:
    return checkpoint_out(_get(session, user, ckpt_id))


@router.head("/{ckpt_id}/file", include_in_schema=False)
@router.get("/{ckpt_id}/file", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 304: {}, 409: {}, 416: {}})
def download(ckpt_id: CheckpointId, request: Request, session: SessionDep, store: StoreDep, user: CurrentUser,
             format: Format = "dense") -> Response:
    """The checkpoint file; `ETag` is its sha256, `Range` resumes a partial download."""
    ckpt = _get(session, user, ckpt_id)
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
    return serve_blob(request, path, f.sha256, f.media_type, f.filename)
