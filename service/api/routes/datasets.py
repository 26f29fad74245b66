"""Built-in datasets and .npz uploads."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from sqlalchemy import select

from fine.spec import DatasetError
from learngene_store.collect import delete_dataset, jobs_using
from learngene_store.datasets import validate_npz
from learngene_store.models import Dataset
from service.access import can_see_dataset, visible_datasets
from service.deps import CurrentUser, DatasetId, SessionDep, SettingsDep, StoreDep, WriterDep
from service.errors import Problem
from service.quotas import check_storage_quota
from service.schemas import DatasetOut
from service.uploads import check_declared_size, spooled

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def _out(d: Dataset) -> DatasetOut:
    return DatasetOut(id=d.id, kind=d.kind, name=d.name, num_images=d.num_images, image_size=d.image_size,
                      channels=d.channels, num_classes=d.num_classes, description=d.description, sha256=d.sha256,
                      bytes=d.bytes, created_at=d.created_at)


@router.get("", response_model=list[DatasetOut])
def list_datasets(session: SessionDep, user: CurrentUser) -> list[DatasetOut]:
    """Built-in datasets first, then your uploads (newest first). A job's `dataset` may add a class
    filter to any of them, e.g. `fashion-mnist:5-9`."""
    rows = session.execute(visible_datasets(select(Dataset), user).order_by(Dataset.kind, Dataset.created_at.desc())).scalars()
    return [_out(d) for d in rows]


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: DatasetId, session: SessionDep, user: CurrentUser) -> DatasetOut:
    d = session.get(Dataset, dataset_id)
    if d is None or not can_see_dataset(user, d):
        raise Problem(404, f"no dataset {dataset_id!r}; list them with GET /v1/datasets", type_="dataset-not-found")
    return _out(d)


@router.post("", status_code=201, response_model=DatasetOut, responses={413: {}, 422: {}})
def upload_dataset(request: Request, response: Response, session: SessionDep, store: StoreDep,
                   settings: SettingsDep, user: WriterDep,
                   file: Annotated[UploadFile, File(description=".npz with uint8 `images` (N,H,W[,C]) "
                                                                "and optional integer `labels`")],
                   name: Annotated[str | None, Form(max_length=200)] = None) -> DatasetOut:
    """Upload a dataset; it gets an id to use as a job's `dataset`."""
    check_declared_size(request, settings.max_upload_bytes)
    owner = user.name
    label = (name or file.filename or "upload.npz")[:200]
    with spooled(file, settings.max_upload_bytes, settings.work_dir, "upload.npz") as path:
        check_storage_quota(session, settings, user, path.stat().st_size)
        try:
            info = validate_npz(path, settings.max_upload_images, settings.max_upload_unpacked_bytes)
        except DatasetError as e:
            raise Problem(422, f"{label}: {e}", type_="invalid-dataset") from None
        sha, size = store.put_file(path)
    existing = session.execute(select(Dataset).where(Dataset.sha256 == sha, Dataset.owner == owner)).scalars().first()
    if existing is not None:  # same bytes uploaded again: same dataset
        response.status_code = 200
        response.headers["Location"] = f"/v1/datasets/{existing.id}"
        return _out(existing)
    d = Dataset(id=f"ds_{secrets.token_hex(6)}", kind="upload", name=label, sha256=sha, bytes=size,
                num_images=info.num_images, image_size=info.image_size, channels=info.channels,
                num_classes=info.num_classes, description=f"uploaded {label}", owner=owner)
    session.add(d)
    session.commit()
    response.headers["Location"] = f"/v1/datasets/{d.id}"
    return _out(d)


@router.delete("/{dataset_id}", status_code=204, response_class=Response, responses={403: {}, 404: {}, 409: {}})
def delete(dataset_id: DatasetId, session: SessionDep, store: StoreDep, user: WriterDep) -> Response:
    """Delete one of your uploads (not while a queued or running job trains on it); its blob goes too
    unless another upload holds the same bytes. Checkpoints trained on it stay."""
    d = session.get(Dataset, dataset_id)
    if d is None or (d.kind == "upload" and d.owner != user.name):
        raise Problem(404, f"no dataset {dataset_id!r} of yours; list them with GET /v1/datasets",
                      type_="dataset-not-found")
    if d.kind != "upload":
        raise Problem(403, f"{dataset_id} is a built-in dataset; only uploads can be deleted", type_="builtin-dataset")
    busy = jobs_using(session, dataset_id)
    if busy:
        raise Problem(409, f"{dataset_id} is in use by unfinished job(s) {', '.join(busy)}; cancel them or wait "
                           "until they end", type_="dataset-in-use")
    delete_dataset(session, store, d)
    return Response(status_code=204)
