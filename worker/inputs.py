"""Materialising a job's inputs from the blob store into its private work directory."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session

from fine.spec import parse_dataset_name as parse_name
from learngene_store.blobs import BlobStore, copy_out
from learngene_store.models import Dataset, Learngene


def learngene_file(session: Session, store: BlobStore, learngene_id: str, work: Path) -> Path:
    """learngene.safetensors (hash-verified) with its config.json sidecar beside it."""
    lg = session.get(Learngene, learngene_id)
    if lg is None:
        raise LookupError(f"learngene {learngene_id} is no longer in the registry")
    path = copy_out(store, lg.sha256, work / "learngene" / "learngene.safetensors")
    (path.parent / "config.json").write_text(json.dumps(lg.meta, indent=2, sort_keys=True))
    return path


def dataset_name(session: Session, store: BlobStore, dataset: str, work: Path) -> str:
    """Built-in names pass through; an upload id becomes the path of its .npz (+ class filter)."""
    base, _ = parse_name(dataset)
    row = session.get(Dataset, base)
    if row is None:
        raise LookupError(f"dataset {base} is no longer in the registry")
    if row.kind == "builtin":
        return dataset
    assert row.sha256 is not None
    path = copy_out(store, row.sha256, work / "data" / f"{row.id}.npz")
    return str(path) + dataset[len(base):]
