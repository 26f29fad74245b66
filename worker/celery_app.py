"""The worker's Celery app: the shared broker config plus the task that runs a job."""

from __future__ import annotations

import logging

from learngene_store.broker import RUN_JOB, make_celery
from learngene_store.settings import get_settings
from worker.runner import run_job

settings = get_settings()
app = make_celery(settings)
log = logging.getLogger(__name__)


@app.task(name=RUN_JOB, acks_late=True, ignore_result=True)
def run_job_task(job_id: str) -> str:
    outcome = run_job(settings, job_id)
    log.info("job %s: %s", job_id, outcome)
    return outcome
