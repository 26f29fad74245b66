"""The reaper: a thread (in every API process, and in workers) that re-queues jobs whose worker
stopped beating, fails them after the attempt limit, and re-sends queued jobs that never reached
the broker. Every transition is a conditional UPDATE, so any number of reapers can run at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery import Celery

from dispatch.broker import enqueue_job
from dispatch.settings import DispatchSettings
from learngene_store import jobs as job_states
from learngene_store.db import session_factory

log = logging.getLogger(__name__)


OnReap = Callable[[str, int], None]  # (outcome, count), e.g. for metrics


def sweep(settings: DispatchSettings, celery: Celery, on_reap: OnReap | None = None) -> job_states.ReapReport:
    with session_factory(settings)() as session:
        report = job_states.reap(session, settings.heartbeat_timeout, settings.max_attempts,
                                 settings.dispatch_grace, settings.stall_timeout, settings.redispatch_after)
        for job_id in report.requeued + report.redispatch:
            try:
                enqueue_job(celery, settings, job_id)
                job_states.mark_dispatched(session, job_id)
            except Exception as e:
                log.warning("could not dispatch job %s yet: %s", job_id, e)
    for outcome in ("requeued", "failed", "canceled"):
        ids = getattr(report, outcome)
        if ids:
            if on_reap is not None:
                on_reap(outcome, len(ids))
            log.warning("reaper: %s %s", outcome, ", ".join(ids))
    return report


class Reaper(threading.Thread):
    def __init__(self, settings: DispatchSettings, celery: Celery, on_reap: OnReap | None = None) -> None:
        super().__init__(name="fine-reaper", daemon=True)
        self.settings = settings
        self.celery = celery
        self.on_reap = on_reap
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.reaper_interval):
            try:
                sweep(self.settings, self.celery, self.on_reap)
            except Exception:
                log.exception("reaper sweep failed; retrying in %.0f s", self.settings.reaper_interval)

    def stop(self) -> None:
        self.stopped.set()
