"""What a worker reads (on top of the dispatch and store settings)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import field_validator

from dispatch.settings import DispatchSettings
from fine.spec import SAMPLE_PRECISIONS


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or taskset's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class WorkerSettings(DispatchSettings):
    """A worker process's settings (FINE_* environment variables)."""

    worker_reaper: bool = True  # workers run a reaper thread too
    worker_id: str | None = None  # default: hostname:pid
    torch_threads: int | None = None  # torch.set_num_threads (None: the cores available / workers_per_host)
    workers_per_host: int = 1  # worker processes that share this machine's cores (FINE_WORKERS_PER_HOST)
    # decoded datasets (uint8 .npy, memory-mapped) and learngene files kept between jobs (FINE_CACHE_DIR,
    # which fine/colour.py's generated datasets use too); default $FINE_HOME/cache
    cache_dir: Path | None = None
    # `fine serve` sets this for its embedded worker, which then exits when that process is gone
    worker_parent_pid: int | None = None
    parent_exit_grace: float = 10.0  # seconds of warm shutdown before an orphaned worker exits hard
    # queued work may wait this long on this idle worker before it exits for a restart: its Celery
    # consumer is dead (worker/consumer_watch.py); 0 turns the watch off
    consumer_watchdog: float = 60.0
    # the evaluation's sampling: fp32 | bf16 | auto (bf16 where the CPU has AMX); fine.spec.SAMPLE_PRECISIONS
    sample_precision: str = "fp32"

    @field_validator("sample_precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in SAMPLE_PRECISIONS:
            raise ValueError(f"FINE_SAMPLE_PRECISION must be one of {', '.join(SAMPLE_PRECISIONS)}, got {value!r}")
        return value

    @property
    def threads(self) -> int:
        """The torch threads of one job: the setting, else this worker's share of the cores."""
        if self.torch_threads:
            return self.torch_threads
        return max(1, available_cores() // max(1, self.workers_per_host))

    @property
    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.home / "cache").resolve()


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()
