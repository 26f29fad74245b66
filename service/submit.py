"""Accepting a job: idempotency, the registry row, then dispatch. Shared by POST /v1/jobs and
POST /v1/learngenes (pre-training). Accepted jobs are never lost: if the broker is down the job
stays queued and the reaper dispatches it later."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from fastapi import Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dispatch.broker import enqueue_job
from learngene_store import events
from learngene_store import jobs as job_states
from learngene_store.models import Job
from service.errors import Problem
from service.metrics import JOBS_SUBMITTED
from service.settings import ApiSettings

log = logging.getLogger(__name__)


def request_hash(kind: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"kind": kind, **body}, sort_keys=True).encode()).hexdigest()


def replay(session: Session, owner: str, key: str, digest: str) -> Job | None:
    prior = session.execute(select(Job).where(Job.owner == owner, Job.idempotency_key == key)).scalar_one_or_none()
    if prior is not None and prior.request_hash != digest:
        raise Problem(422, f"Idempotency-Key {key!r} was already used for a different request (job {prior.id}); "
                           "use a new key for a new job", type_="idempotency-key-reused")
    return prior


def _replayed(response: Response, job: Job) -> Job:
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    response.headers["Idempotent-Replayed"] = "true"
    return job


def submit(session: Session, settings: ApiSettings, celery: Celery, response: Response, *, owner: str,
           idempotency_key: str | None, kind: str, body: dict[str, Any],
           build: Callable[[], dict[str, Any]]) -> Job:
    """`build()` validates and returns the Job columns; it runs only when this is not a replay."""
    digest = request_hash(kind, body)
    if idempotency_key is not None:
        prior = replay(session, owner, idempotency_key, digest)
        if prior is not None:
            return _replayed(response, prior)
    job = Job(owner=owner, idempotency_key=idempotency_key, request_hash=digest, kind=kind, status="queued",
              step=0, attempts=0, cancel_requested=False, **build())
    session.add(job)
    try:
        session.flush()
        events.status(session, job.id, "queued")
        session.commit()
    except IntegrityError:  # the same key raced us: answer as a replay
        session.rollback()
        prior = replay(session, owner, idempotency_key or "", digest)
        if prior is None:
            raise
        return _replayed(response, prior)
    try:
        enqueue_job(celery, settings, job.id)
        job_states.mark_dispatched(session, job.id)
    except Exception as e:
        log.warning("job %s stored but not yet dispatched (%s); the reaper will retry", job.id, e)
    JOBS_SUBMITTED.inc()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    session.refresh(job)
    return job
