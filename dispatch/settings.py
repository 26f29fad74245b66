"""What the dispatch side reads: the broker, the queue and job supervision (on top of the store's)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from learngene_store.settings import StoreSettings


class DispatchSettings(StoreSettings):
    """Broker and supervision settings, read by the API processes and by workers alike."""

    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "FINE_REDIS_URL"))
    broker_key_prefix: str = ""  # isolates several deployments (or test runs) on one Redis
    queue: str = "gpu"

    # job supervision
    heartbeat_interval: float = 1.0  # seconds between a worker's progress/heartbeat writes
    heartbeat_timeout: float = 30.0  # a running job silent this long has lost its worker
    max_attempts: int = 3  # worker deaths tolerated per job before it is failed
    reaper_interval: float = 5.0  # seconds between reaper sweeps (API processes and workers)
    dispatch_grace: float = 5.0  # a queued job never handed to the broker is re-sent after this
    redispatch_after: float = 300.0  # a dispatched job still queued this long (message lost?) is re-sent
    stall_timeout: float = 900.0  # a running job whose step has not moved this long is hung: re-queued / failed
    max_job_seconds: float = 6 * 3600.0  # wall-clock limit of one attempt, enforced by the worker

    @property
    def resolved_broker_url(self) -> str:
        return self.redis_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.home / "broker").resolve()

    @property
    def embedded(self) -> bool:
        return self.redis_url is None
