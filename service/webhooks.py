"""What the API's webhook sender sends: the job exactly as GET /v1/jobs/{id} returns it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from learngene_store.models import Job
from service.jobs_view import job_out


def render_job(session: Session, job_id: str) -> dict[str, Any] | None:
    job = session.get(Job, job_id, populate_existing=True)
    return None if job is None else job_out(job).model_dump(mode="json")
