"""A job's inputs, from the blob store, loaded once per worker process where that is safe.

- A learngene set is loaded once per worker process while its sha256 is unchanged (the ancestry is
  only read: assembly clones what a descendant trains), its file kept in the worker's cache dir.
- An uploaded dataset's .npz is copied once into the cache dir, under its sha256.
- Datasets are decoded once into uint8 arrays in the cache dir and memory-mapped (fine.data.load).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from fine.spec import JobSpec
from fine.spec import parse_dataset_name as parse_name
from learngene_store.blobs import BlobStore, copy_out
from learngene_store.models import Dataset, Job, Learngene

if TYPE_CHECKING:
    from fine.data import ImageData
    from fine.formats import LearngeneSet

log = logging.getLogger(__name__)
KEEP_LEARNGENES = 2  # loaded sets a worker process keeps (the default and one other, typically)
_learngenes: OrderedDict[str, LearngeneSet] = OrderedDict()  # sha256 -> loaded set, most recent last


def _cached_blob(store: BlobStore, sha256: str, dest: Path) -> Path:
    """A verified copy of the blob at `dest`, made once (a complete file is only ever renamed into place)."""
    if not dest.exists():
        tmp = copy_out(store, sha256, dest.with_name(f".{dest.name}.{os.getpid()}.part"))
        os.replace(tmp, dest)
    return dest


def learngene_file(session: Session, store: BlobStore, learngene_id: str, directory: Path) -> Path:
    """learngene.safetensors (hash-verified) with its config.json sidecar, under directory/<sha256>/."""
    lg = session.get(Learngene, learngene_id)
    if lg is None:
        raise LookupError(f"learngene {learngene_id} is no longer in the registry")
    path = _cached_blob(store, lg.sha256, directory / lg.sha256 / "learngene.safetensors")
    sidecar = path.parent / "config.json"
    if not sidecar.exists():
        sidecar.with_suffix(f".{os.getpid()}.part").write_text(json.dumps(lg.meta, indent=2, sort_keys=True))
        os.replace(sidecar.with_suffix(f".{os.getpid()}.part"), sidecar)
    return path


def learngene(session: Session, store: BlobStore, learngene_id: str, cache: Path) -> LearngeneSet:
    """The loaded learngene set: from this process's memory while its sha256 is the registry's."""
    from fine.formats import load_learngene

    row = session.get(Learngene, learngene_id)
    if row is None:
        raise LookupError(f"learngene {learngene_id} is no longer in the registry")
    loaded = _learngenes.get(row.sha256)
    if loaded is not None:
        _learngenes.move_to_end(row.sha256)
        log.info("learngene %s already loaded (sha256 %s)", learngene_id, row.sha256[:12])
        return loaded
    path = learngene_file(session, store, learngene_id, cache / "learngenes")
    loaded = load_learngene(path, expected_sha256=row.sha256)
    _learngenes[row.sha256] = loaded
    while len(_learngenes) > KEEP_LEARNGENES:
        _learngenes.popitem(last=False)
    log.info("learngene %s loaded (sha256 %s)", learngene_id, row.sha256[:12])
    return loaded


def dataset_name(session: Session, store: BlobStore, dataset: str, directory: Path) -> str:
    """Built-in names pass through; an upload id becomes the path of its .npz (+ class filter), copied
    into `directory` once per content."""
    base, _ = parse_name(dataset)
    row = session.get(Dataset, base)
    if row is None:
        raise LookupError(f"dataset {base} is no longer in the registry")
    if row.kind == "builtin":
        return dataset
    assert row.sha256 is not None
    path = _cached_blob(store, row.sha256, directory / "uploads" / f"{row.sha256}.npz")
    return str(path) + dataset[len(base):]


def load_splits(name: str, cache: Path) -> tuple[ImageData, ImageData]:
    """The train and test splits of a dataset name (or .npz path), decoded once into the cache."""
    from fine.data import load

    return load(name, "train", cache_dir=cache), load(name, "test", cache_dir=cache)


def job_spec(job: Job) -> JobSpec:
    """The spec a worker runs: the stored, validated one (learngene and num_heads resolved, warnings beside
    it), with the registry's dataset name (what the metadata records; the data itself is loaded apart)."""
    stored = {k: v for k, v in job.spec.items() if k in JobSpec.model_fields}
    return JobSpec.model_validate({**stored, "dataset": job.dataset})
