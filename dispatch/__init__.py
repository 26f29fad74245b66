"""Dispatch: the Celery app, enqueueing a job id, and the reaper. Job state stays in learngene_store."""
