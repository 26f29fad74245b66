"""Deleting a user's checkpoints and datasets, and collecting the blobs nothing references any more."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from learngene_store.blobs import BlobStore
from learngene_store.models import FINAL_STATUSES, Checkpoint, CheckpointFile, Dataset, Job, Learngene, LearngeneFile


def referenced(session: Session, sha256: str) -> bool:
    """Does any checkpoint file, dataset, learngene or learngene picture still point at this blob?"""
    for col in (CheckpointFile.sha256, Dataset.sha256, Learngene.sha256, LearngeneFile.sha256):
        if session.execute(select(col).where(col == sha256).limit(1)).first() is not None:
            return True
    return False


def collect(session: Session, store: BlobStore, shas: Iterable[str]) -> list[str]:
    """Delete the blobs among `shas` that nothing references (after the rows were committed); returns them."""
    gone = []
    for sha in sorted(set(shas)):
        if not referenced(session, sha):
            store.delete(sha)
            gone.append(sha)
    return gone


def delete_checkpoint(session: Session, store: BlobStore, ckpt: Checkpoint) -> list[str]:
    """Remove a checkpoint and its file rows; its job stays (without a checkpoint). Returns the blobs collected."""
    for attempt in range(3):
        shas = [f.sha256 for f in ckpt.files]
        session.delete(ckpt)
        try:
            session.commit()
            break
        except IntegrityError:  # its evaluation attached a file (the sample grid) since we read them: again
            session.rollback()
            if attempt == 2:
                raise
            session.refresh(ckpt)
    return collect(session, store, shas)


def jobs_using(session: Session, dataset_id: str) -> list[str]:
    """Unfinished jobs that train on this dataset (with or without a class filter)."""
    q = select(Job.id).where(or_(Job.dataset == dataset_id, Job.dataset.startswith(dataset_id + ":")),
                             Job.status.not_in(FINAL_STATUSES))
    return list(session.execute(q).scalars())


def delete_dataset(session: Session, store: BlobStore, dataset: Dataset) -> list[str]:
    """Remove an uploaded dataset's row and collect its blob when nothing else holds the same bytes."""
    sha = dataset.sha256
    session.delete(dataset)
    session.commit()
    return collect(session, store, [sha] if sha else [])
