"""`python -m worker`: one Celery worker process on the `gpu` queue, one job at a time."""

from __future__ import annotations

import logging
import sys

from learngene_store.db import migrate
from worker.consumer_watch import EXIT_CODE
from worker.settings import WorkerSettings, get_settings


def preload(settings: WorkerSettings) -> None:
    """Import what every job needs before taking the first one, so that no job waits for it: torch (at the
    worker's threads), the pipeline, the metrics, matplotlib for the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import torch

    import fine.metrics  # noqa: F401
    import fine.pipeline  # noqa: F401

    torch.set_num_threads(settings.threads)
    logging.getLogger(__name__).info("worker ready to run jobs with %d torch threads", settings.threads)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.worker_parent_pid is not None:
        from worker.parent_watch import start_parent_watch

        start_parent_watch(settings.worker_parent_pid, settings.parent_exit_grace)
    migrate(settings)
    # torch and the method load now, before the first job, not inside it: an import of seconds (tens of
    # seconds on a loaded machine) in a job's first step starves its heartbeat thread, and the reaper
    # takes the job for lost
    preload(settings)
    from worker import celery_app

    args = ["worker", "-Q", settings.queue, "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
            *(argv if argv is not None else sys.argv[1:])]
    celery_app.app.worker_main(args)
    if celery_app.watch is not None and celery_app.watch.fired.is_set():
        sys.exit(EXIT_CODE)  # the consumer watchdog ended this worker: its supervisor starts a new one


if __name__ == "__main__":
    main()
