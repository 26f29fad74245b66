"""POST/GET /v1/jobs, GET /v1/jobs/{id}, POST /v1/jobs/{id}/cancel."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload, lazyload

from fine.spec import JobSpec
from learngene_store import evaluations
from learngene_store import jobs as job_states
from learngene_store.models import Checkpoint, Job, User
from service.access import owned, owns
from service.deps import CeleryDep, CurrentUser, IdempotencyKey, JobId, JsonBody, SessionDep, SettingsDep, WriterDep
from service.errors import Problem
from service.jobs_view import job_out
from service.pagination import newest_first
from service.quotas import check_job_quota
from service.schemas import JobOut, Page, Status
from service.submit import submit
from service.validation import validate_spec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger(__name__)


# Built once (building a statement costs about what running it does). job_out reads the checkpoint: it comes
# in the job's own query, not a second one (its files are not needed).
BY_ID = (select(Job).where(Job.id == bindparam("job_id"))
         .options(joinedload(Job.checkpoint).options(lazyload(Checkpoint.files)))
         .execution_options(populate_existing=True))


def _get(session: SessionDep, user: User, job_id: str) -> Job:
    job = session.execute(BY_ID, {"job_id": job_id}).scalar_one_or_none()
    if job is None or not owns(user, job.owner):
        raise Problem(404, f"no job {job_id!r}; list jobs with GET /v1/jobs", type_="job-not-found")
    return job


@router.post("", status_code=202, response_model=JobOut, dependencies=[JsonBody],
             responses={409: {"description": "no learngene"}, 422: {"description": "invalid spec"}})
def create_job(spec: JobSpec, response: Response, session: SessionDep, settings: SettingsDep,
               celery: CeleryDep, user: WriterDep,
               idempotency_key: IdempotencyKey = None) -> JobOut:
    """Validate a spec and queue a job; 202 + Location. Repeating a request with the same
    `Idempotency-Key` returns the same job instead of a new one."""

    def build() -> dict:
        resolved = validate_spec(session, spec, user, settings)
        check_job_quota(session, settings, user, spec.sigma_steps_run + spec.finetune_steps)
        return {"spec": {**resolved.spec, "warnings": resolved.warnings}, "learngene_id": resolved.learngene.id,
                "dataset": spec.dataset, "method": spec.method,
                "total": spec.sigma_steps_run + spec.finetune_steps}

    job = submit(session, settings, celery, response, owner=user.name, idempotency_key=idempotency_key, kind="init",
                 body=spec.model_dump(), build=build)
    return job_out(job)


@router.get("", response_model=Page[JobOut])
def list_jobs(session: SessionDep, user: CurrentUser, request: Request, response: Response,
              status: Status | None = None, learngene: Annotated[str | None, Query(max_length=128)] = None,
              dataset: Annotated[str | None, Query(max_length=256)] = None,
              method: Annotated[str | None, Query(max_length=32)] = None,
              kind: Literal["init", "pretrain"] | None = None,
              cursor: Annotated[str | None, Query(max_length=256)] = None,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Page[JobOut]:
    """Your jobs (an admin's: everyone's), newest first; pass `next_cursor` back as `cursor` for the next page."""
    q = owned(select(Job), Job, user)
    if kind is not None:
        q = q.where(Job.kind == kind)
    for col, value in ((Job.status, status), (Job.learngene_id, learngene), (Job.dataset, dataset),
                       (Job.method, method)):
        if value is not None:
            q = q.where(col == value)
    rows, next_cursor = newest_first(session, q, Job, request, response, cursor, limit)
    return Page[JobOut](items=[job_out(j) for j in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: JobId, session: SessionDep, user: CurrentUser) -> JobOut:
    # One thread hop for the query and the body: a sync route would take a second one to validate what it returned.
    return await run_in_threadpool(lambda: job_out(_get(session, user, job_id)))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut)
def cancel_job(job_id: JobId, session: SessionDep, user: WriterDep) -> JobOut:
    """Cooperative cancel: a queued job is canceled at once, a running one stops at its next step; a succeeded
    job's evaluation still under way is canceled (its checkpoint stays, metrics `canceled`)."""
    job = _get(session, user, job_id)
    if job.status == "succeeded" and evaluations.request_cancel(session, job_id):
        session.expire_all()
        return job_out(_get(session, user, job_id))
    if job_states.is_final(job.status) and job.status != "canceled":
        raise Problem(409, f"job {job_id} already {job.status}; only queued or running jobs can be canceled",
                      type_="job-finished")
    job = job_states.request_cancel(session, job_id)
    assert job is not None
    return job_out(job)
