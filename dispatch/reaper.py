"""The reaper: a thread (in every API process, and in workers) that re-queues jobs whose worker
stopped beating, fails them after the attempt limit, and re-sends queued jobs that never reached
the broker. Every transition is a conditional UPDATE, so any number of reapers can run at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery import Celery
from sqlalchemy.orm import Session

from dispatch.broker import enqueue_evaluation, enqueue_job
from dispatch.settings import DispatchSettings
from learngene_store import evaluations
from learngene_store import jobs as job_states
from learngene_store.db import session_factory

log = logging.getLogger(__name__)


OnReap = Callable[[str, int], None]  # (outcome, count), e.g. for metrics


def sweep(settings: DispatchSettings, celery: Celery, on_reap: OnReap | None = None) -> job_states.ReapReport:
    with session_factory(settings)() as session:
        report = job_states.reap(session, settings.heartbeat_timeout, settings.max_attempts,
                                 settings.dispatch_grace, settings.stall_timeout, settings.redispatch_after)
        _dispatch(session, "job", report.requeued + report.redispatch,
                  lambda job_id: enqueue_job(celery, settings, job_id), job_states.mark_dispatched)
        evals = evaluations.reap(session, settings.heartbeat_timeout, settings.max_attempts, settings.dispatch_grace,
                                 settings.redispatch_after)
        _dispatch(session, "evaluation of", evals.dispatch,
                  lambda ckpt_id: enqueue_evaluation(celery, settings, ckpt_id), evaluations.mark_dispatched)
    for what, found in (("", report), ("evaluations ", evals)):
        for outcome in ("requeued", "failed", "canceled"):
            ids = getattr(found, outcome)
            if ids:
                if on_reap is not None and found is report:
                    on_reap(outcome, len(ids))
                log.warning("reaper: %s%s %s", what, outcome, ", ".join(ids))
    return report


def _dispatch(session: Session, what: str, ids: list[str], send: Callable[[str], None],
              mark: Callable[[Session, str], None]) -> None:
    for one in ids:
        try:
            send(one)
            mark(session, one)
        except Exception as e:
            log.warning("could not dispatch %s %s yet: %s", what, one, e)


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
