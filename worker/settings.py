"""What a worker reads (on top of the dispatch and store settings)."""

from __future__ import annotations

from functools import lru_cache

from dispatch.settings import DispatchSettings


class WorkerSettings(DispatchSettings):
    """A worker process's settings (FINE_* environment variables)."""

    worker_reaper: bool = True  # workers run a reaper thread too
    worker_id: str | None = None  # default: hostname:pid
    torch_threads: int | None = None  # torch.set_num_threads (None: torch's default)
    # `fine serve` sets this for its embedded worker, which then exits when that process is gone
    worker_parent_pid: int | None = None
    parent_exit_grace: float = 10.0  # seconds of warm shutdown before an orphaned worker exits hard
    # queued work may wait this long on this idle worker before it exits for a restart: its Celery
    # consumer is dead (worker/consumer_watch.py); 0 turns the watch off
    consumer_watchdog: float = 60.0


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()
