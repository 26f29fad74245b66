"""The Celery app both sides share: the API only sends job ids, workers consume the `gpu` queue.

Celery dispatches and nothing else: job state lives in the SQL registry, so no result backend.
Embedded mode uses kombu's filesystem transport (no server); REDIS_URL switches to Redis.
"""

from __future__ import annotations

from celery import Celery

from dispatch.settings import DispatchSettings

RUN_JOB = "worker.run_job"
EVALUATE = "worker.evaluate"  # a registered checkpoint's (re-)evaluation, by checkpoint id


def make_celery(settings: DispatchSettings) -> Celery:
    app = Celery("fine-zoo", broker=settings.resolved_broker_url)
    transport_options: dict[str, object] = {}
    if settings.embedded:
        base = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(base / "queue"),
            "data_folder_out": str(base / "queue"),
            "processed_folder": str(base / "processed"),
            # kombu otherwise writes its exchange table to ./control in the working directory
            "control_folder": str(base / "control"),
            "store_processed": False,
            "polling_interval": 0.5,
        }
    else:
        # An unacknowledged job goes back to the queue after this long; the reaper (heartbeats)
        # normally re-queues a dead worker's job far sooner, and redelivery is idempotent.
        transport_options = {"visibility_timeout": 3600}
        if settings.broker_key_prefix:
            transport_options["global_keyprefix"] = settings.broker_key_prefix
    app.conf.update(
        task_routes={RUN_JOB: {"queue": settings.queue}, EVALUATE: {"queue": settings.queue}},
        task_default_queue=settings.queue,
        task_acks_late=True,  # a job is acknowledged only once it has finished
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # never hold a job another worker could run
        worker_concurrency=1,  # one job at a time per worker process
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


def enqueue_job(app: Celery, settings: DispatchSettings, job_id: str) -> None:
    app.send_task(RUN_JOB, args=[job_id], queue=settings.queue, retry=True,
                  retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})


def enqueue_evaluation(app: Celery, settings: DispatchSettings, checkpoint_id: str) -> None:
    app.send_task(EVALUATE, args=[checkpoint_id], queue=settings.queue, retry=True,
                  retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})


def check_broker(app: Celery, timeout: float = 2.0) -> None:
    """Raise if the broker cannot be reached (readiness)."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
