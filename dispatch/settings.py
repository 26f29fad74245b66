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

    # webhooks (sent by the API processes, dispatch/webhooks.py)
    webhook_max_attempts: int = 6  # tries per delivery, then `failed`
    webhook_backoff: float = 30.0  # seconds before the 2nd try; doubles each time (30, 60, 120, 240, 480 s)
    webhook_timeout: float = 5.0  # seconds a receiver has to answer
    webhook_interval: float = 1.0  # seconds between a sender's looks for due deliveries
    # Hosts a webhook may name (comma-separated; ".example.com" also allows its subdomains); empty: any host
    # that resolves to a public address. Hosts listed here are called even when they resolve to private ones.
    webhook_allowed_hosts: str = ""
    webhook_allow_private: bool | None = None  # call loopback/private/link-local addresses (None: embedded only)

    @property
    def resolved_broker_url(self) -> str:
        return self.redis_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.home / "broker").resolve()

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    @property
    def webhook_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.webhook_allowed_hosts.split(",") if h.strip())

    @property
    def webhook_private_ok(self) -> bool:
        return self.embedded if self.webhook_allow_private is None else self.webhook_allow_private
