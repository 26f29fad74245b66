"""The worker's Celery app: the shared broker config plus the task that runs a job."""

from __future__ import annotations

import logging

from celery.signals import task_postrun, task_prerun, worker_ready, worker_shutting_down

from dispatch.broker import EVALUATE, RUN_JOB, make_celery
from dispatch.reaper import Reaper
from worker.consumer_watch import ConsumerWatch
from worker.evaluation import evaluate_checkpoint
from worker.lease import SHUTTING_DOWN
from worker.runner import run_job
from worker.settings import get_settings

settings = get_settings()
app = make_celery(settings)
log = logging.getLogger(__name__)


@app.task(name=RUN_JOB, acks_late=True, ignore_result=True)
def run_job_task(job_id: str) -> str:
    outcome = run_job(settings, job_id)
    log.info("job %s: %s", job_id, outcome)
    return outcome


@app.task(name=EVALUATE, acks_late=True, ignore_result=True)
def evaluate_task(checkpoint_id: str) -> str:
    outcome = evaluate_checkpoint(settings, checkpoint_id)
    log.info("evaluation of %s: %s", checkpoint_id, outcome)
    return outcome


_reaper: Reaper | None = None
watch: ConsumerWatch | None = None


@worker_ready.connect
def _start_threads(**_: object) -> None:
    """Workers reap too, so dead workers' jobs are re-queued even while no API process runs; and they
    watch their own consumer (worker/consumer_watch.py)."""
    global _reaper, watch
    if settings.worker_reaper:
        _reaper = Reaper(settings, app)
        _reaper.start()
    if settings.consumer_watchdog > 0:
        watch = ConsumerWatch(app, settings.queue, settings.consumer_watchdog)
        watch.start()


@task_prerun.connect
def _job_started(**_: object) -> None:
    if watch is not None:
        watch.job_started()


@task_postrun.connect
def _job_ended(**_: object) -> None:
    if watch is not None:
        watch.job_ended()


@worker_shutting_down.connect
def _stop_threads(**_: object) -> None:
    """SIGTERM: stop reaping and watching, and make a running job hand its lease back at its next step."""
    SHUTTING_DOWN.set()
    for thread in (_reaper, watch):
        if thread is not None:
            thread.stop()
