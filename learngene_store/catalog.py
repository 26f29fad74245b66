"""Registering learngene sets and datasets, and the start-up seeding of the registry."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from learngene_store.accounts import DEFAULT_ALIAS, SYSTEM_OWNER, set_alias
from learngene_store.blobs import BlobStore
from learngene_store.datasets import BUILTIN
from learngene_store.learngene_meta import LearngeneMetaError, read_metadata
from learngene_store.models import Alias, Dataset, Learngene, LearngeneFile

log = logging.getLogger(__name__)

LEARNGENE_COLUMNS = ("hidden_size", "head_dim", "depth", "rank", "patch_size", "image_size", "in_channels",
                     "num_classes", "source_dataset", "steps", "widths")


class DuplicateLearngene(ValueError):
    def __init__(self, existing: Learngene, reason: str) -> None:
        super().__init__(reason)
        self.existing = existing


def register_learngene(session: Session, store: BlobStore, path: Path, meta: dict[str, Any],
                       owner: str = "anonymous", public: bool = False) -> Learngene:
    """Store the file in the blob store and add its registry row (meta already normalised)."""
    sha, size = store.put_file(path)
    declared = meta.get("sha256")
    if declared and declared != sha:
        raise LearngeneMetaError(f"{path.name}: config.json says sha256 {declared} but the file hashes to {sha}")
    same_file = session.execute(select(Learngene).where(Learngene.sha256 == sha)).scalar_one_or_none()
    if same_file is not None:
        raise DuplicateLearngene(same_file, f"this file is already registered as learngene {same_file.id}")
    same_id = session.get(Learngene, meta["id"])
    if same_id is not None:
        raise DuplicateLearngene(same_id, f"learngene id {meta['id']!r} is taken by a different file "
                                          f"(sha256 {same_id.sha256}); give the new set another id")
    row = Learngene(id=meta["id"], sha256=sha, bytes=size, meta={**meta, "sha256": sha, "bytes": size},
                    owner=owner, public=public, **{k: meta[k] for k in LEARNGENE_COLUMNS})
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # a concurrent start-up registered it first
        session.rollback()
        existing = session.execute(select(Learngene).where(Learngene.sha256 == sha)).scalar_one_or_none()
        if existing is None:
            raise
        raise DuplicateLearngene(existing, f"already registered as learngene {existing.id}") from None
    return row


PICTURE_NAME = re.compile(r"^(curve|samples_w\d{1,4})\.png$")


def pictures_beside(path: Path) -> dict[str, Path]:
    """A learngene file's pictures in its directory: loss_curve.png (as curve.png) and samples_w<width>.png."""
    found = {"curve.png": path.parent / "loss_curve.png"}
    found.update({p.name: p for p in path.parent.glob("samples_w*.png") if PICTURE_NAME.match(p.name)})
    return {name: p for name, p in found.items() if p.is_file()}


def attach_files(session: Session, store: BlobStore, learngene_id: str, files: dict[str, Path]) -> list[str]:
    """Store pictures of a learngene set and list them in the registry; names it has already are kept."""
    have = set(session.execute(select(LearngeneFile.name).where(LearngeneFile.learngene_id == learngene_id)).scalars())
    added = []
    for name, path in sorted(files.items()):
        if name in have:
            continue
        sha, size = store.put_file(path)
        media = "image/png" if name.endswith(".png") else "application/json"
        session.add(LearngeneFile(learngene_id=learngene_id, name=name, media_type=media, sha256=sha, bytes=size))
        added.append(name)
    try:
        session.commit()
    except IntegrityError:  # a concurrent start-up attached them first
        session.rollback()
        return []
    return added


def register_default_learngene(session: Session, store: BlobStore, path: Path,
                               versions: dict[str, Path] | None = None) -> Learngene | None:
    """Register the shipped learngene sets (public), once each: `versions` (alias -> file) and `path`,
    which becomes the `default` alias target unless an admin pointed that alias elsewhere. A new
    release moves `default` that start-up had set; absent files are fine."""
    for name, other in (versions or {}).items():
        lg = _register_shipped(session, store, other)
        if lg is not None:
            _system_alias(session, lg.id, name)
    lg = _register_shipped(session, store, path)
    if lg is not None:
        _system_alias(session, lg.id, DEFAULT_ALIAS)
    return lg


def _system_alias(session: Session, learngene_id: str, name: str) -> None:
    """Point an alias at a shipped set unless an admin set it (start-up's own choice is its to change)."""
    alias = session.get(Alias, name)
    if alias is None or (alias.updated_by == SYSTEM_OWNER and alias.learngene_id != learngene_id):
        set_alias(session, learngene_id, by=SYSTEM_OWNER, name=name, only_if_unset=alias is None)


def _register_shipped(session: Session, store: BlobStore, path: Path) -> Learngene | None:
    if not path.exists():
        log.warning("shipped learngene %s not found; not registered", path)
        return None
    try:
        meta = read_metadata(path)
        lg = register_learngene(session, store, path, meta, owner=SYSTEM_OWNER, public=True)
    except DuplicateLearngene as e:
        lg = e.existing
    except (LearngeneMetaError, json.JSONDecodeError, OSError) as e:
        log.error("shipped learngene %s not registered: %s", path, e)
        return None
    attach_files(session, store, lg.id, pictures_beside(path))
    return lg


def ensure_builtin_datasets(session: Session) -> None:
    for info in BUILTIN:
        if session.get(Dataset, info.id) is None:
            session.add(Dataset(id=info.id, kind="builtin", name=info.id, num_images=info.num_images,
                                image_size=info.image_size, channels=info.channels,
                                num_classes=info.num_classes, description=info.description))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
