"""Collecting orphaned blobs: stored bytes no registry row (dataset, learngene, checkpoint file, a
pre-training job's saved state) names.

A blob is written before the row that names it commits (and a failed request or a killed worker may never
write that row), so only blobs older than a grace period are collected; putting a blob again makes it young.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from learngene_store.blobs import BlobStore
from learngene_store.models import CheckpointFile, Dataset, Job, Learngene


@dataclass(frozen=True)
class Collected:
    kept: int
    deleted: list[str]
    young: int  # unreferenced but within the grace period


def referenced(session: Session) -> set[str]:
    """Every sha256 a registry row points at."""
    shas: set[str] = set()
    for column in (Dataset.sha256, Learngene.sha256, CheckpointFile.sha256, Job.resume_sha):
        shas.update(x for x in session.execute(select(column)).scalars() if x)
    return shas


def collect_orphans(session: Session, store: BlobStore, grace: float = 3600.0, dry_run: bool = False) -> Collected:
    """Delete blobs no row names that are older than `grace` seconds."""
    keep = referenced(session)
    kept, young, deleted = 0, 0, []
    for sha, age in list(store.stored()):
        if sha in keep:
            kept += 1
        elif age < grace:
            young += 1
        else:
            if not dry_run:
                store.delete(sha)
            deleted.append(sha)
    return Collected(kept, deleted, young)
