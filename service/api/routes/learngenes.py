"""Browse and register learngene sets."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from sqlalchemy import func, select

from learngene_store.blobs import BlobCorrupt, BlobMissing
from learngene_store.catalog import DuplicateLearngene, register_learngene
from learngene_store.learngene_meta import LearngeneMetaError, normalize, read_safetensors_header
from learngene_store.models import Checkpoint, Learngene
from service.deps import OwnerDep, SessionDep, SettingsDep, StoreDep
from service.downloads import serve_blob
from service.errors import Problem
from service.schemas import DescendantOut, LearngeneDetail, LearngeneOut
from service.uploads import check_declared_size, spooled

router = APIRouter(prefix="/v1/learngenes", tags=["learngenes"])


def _summary(lg: Learngene, descendants: int) -> dict:
    return dict(id=lg.id, sha256=lg.sha256, bytes=lg.bytes, hidden_size=lg.hidden_size, head_dim=lg.head_dim,
                depth=lg.depth, rank=lg.rank, patch_size=lg.patch_size, image_size=lg.image_size,
                in_channels=lg.in_channels, num_classes=lg.num_classes, source_dataset=lg.source_dataset,
                steps=lg.steps, widths=lg.widths, created_at=lg.created_at, descendants_count=descendants,
                links={"self": f"/v1/learngenes/{lg.id}", "file": f"/v1/learngenes/{lg.id}/file"})


def _get(session: SessionDep, lg_id: str) -> Learngene:
    lg = session.get(Learngene, lg_id)
    if lg is None:
        raise Problem(404, f"no learngene {lg_id!r}; list them with GET /v1/learngenes",
                      type_="learngene-not-found")
    return lg


@router.get("", response_model=list[LearngeneOut])
def list_learngenes(session: SessionDep) -> list[LearngeneOut]:
    """All learngene sets, newest first (the newest is the default for new jobs)."""
    counts = dict(session.execute(select(Checkpoint.learngene_id, func.count()).group_by(Checkpoint.learngene_id))
                  .all())
    rows = session.execute(select(Learngene).order_by(Learngene.created_at.desc(), Learngene.id.desc())).scalars()
    return [LearngeneOut(**_summary(lg, counts.get(lg.id, 0))) for lg in rows]


@router.get("/{lg_id}", response_model=LearngeneDetail)
def get_learngene(lg_id: str, session: SessionDep) -> LearngeneDetail:
    lg = _get(session, lg_id)
    rows = session.execute(select(Checkpoint).where(Checkpoint.learngene_id == lg.id)
                           .order_by(Checkpoint.created_at.desc()).limit(500)).scalars().all()
    desc = [DescendantOut(checkpoint_id=c.id, job_id=c.job_id, depth=c.depth, hidden_size=c.hidden_size,
                          dataset=c.dataset, method=c.method, created_at=c.created_at) for c in rows]
    return LearngeneDetail(**_summary(lg, len(desc)), meta=lg.meta, descendants=desc)


@router.api_route("/{lg_id}/file", methods=["GET", "HEAD"])
def download_learngene(lg_id: str, request: Request, session: SessionDep, store: StoreDep) -> Response:
    lg = _get(session, lg_id)
    try:
        path = store.local_path(lg.sha256)
    except (BlobCorrupt, BlobMissing) as e:
        raise Problem(503, str(e), type_="blob-unavailable") from None
    return serve_blob(request, path, lg.sha256, "application/octet-stream", f"{lg.id}.safetensors")


@router.post("", status_code=201, response_model=LearngeneDetail,
             responses={409: {"description": "already registered"}, 413: {}, 422: {}})
def register(request: Request, response: Response, session: SessionDep, store: StoreDep, settings: SettingsDep,
             owner: OwnerDep, file: Annotated[UploadFile, File(description="learngene.safetensors")],
             config: Annotated[str | None, Form(description="config.json sidecar as JSON text")] = None,
             ) -> LearngeneDetail:
    """Register a learngene set: the safetensors file, with its metadata either in the file's
    `__metadata__` or in a `config` form field (the `config.json` sidecar)."""
    check_declared_size(request, settings.max_upload_bytes)
    sidecar: dict = {}
    if config:
        try:
            sidecar = json.loads(config)
        except json.JSONDecodeError as e:
            raise Problem(422, f"config is not valid JSON ({e})", type_="invalid-learngene") from None
        if not isinstance(sidecar, dict):
            raise Problem(422, "config must be a JSON object", type_="invalid-learngene")
    with spooled(file, settings.max_upload_bytes, settings.work_dir, "learngene.safetensors") as path:
        try:
            header = read_safetensors_header(path)
            _check_layout(header, path)
            meta = {k: v for k, v in (header.get("__metadata__") or {}).items()}
            meta = {k: _maybe_json(v) for k, v in meta.items()}
            meta.update(sidecar)
            meta = normalize(meta, file.filename or "upload")
            lg = register_learngene(session, store, path, meta, owner=owner)
        except LearngeneMetaError as e:
            raise Problem(422, str(e), type_="invalid-learngene") from None
        except DuplicateLearngene as e:
            raise Problem(409, f"{e}; see /v1/learngenes/{e.existing.id}", type_="learngene-exists",
                          headers={"Location": f"/v1/learngenes/{e.existing.id}"}) from None
    response.headers["Location"] = f"/v1/learngenes/{lg.id}"
    return LearngeneDetail(**_summary(lg, 0), meta=lg.meta, descendants=[])


def _maybe_json(v: object) -> object:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


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
