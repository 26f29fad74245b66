"""The one configuration object, shared by the API and the workers (pydantic-settings).

With no environment at all everything is *embedded*: a SQLite file, a blob directory and kombu's
filesystem broker, all under `FINE_HOME` (default `./var`). Set `DATABASE_URL` (PostgreSQL),
`REDIS_URL` and the `FINE_S3_*` variables for the distributed set-up.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINE_", extra="ignore")

    home: Path = Path("var")  # FINE_HOME: root of everything embedded mode writes
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "FINE_DATABASE_URL")
    )
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "FINE_REDIS_URL"))
    broker_key_prefix: str = ""  # isolates several deployments (or test runs) on one Redis
    queue: str = "gpu"

    # blob store: local directory unless an S3 bucket is named
    blob_dir: Path | None = None  # default: <home>/blobs
    s3_bucket: str | None = None
    s3_prefix: str = "blobs/"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    default_learngene: Path = Path("learngenes/default/learngene.safetensors")
    register_default_learngene: bool = True

    # limits
    max_upload_bytes: int = 64 * 1024 * 1024
    max_upload_images: int = 200_000
    page_size_max: int = 100

    # job supervision
    heartbeat_interval: float = 1.0  # seconds between a worker's progress/heartbeat writes
    heartbeat_timeout: float = 30.0  # a running job silent this long has lost its worker
    max_attempts: int = 3  # worker deaths tolerated per job before it is failed
    reaper_interval: float = 5.0  # seconds between reaper sweeps (API processes and workers)
    worker_reaper: bool = True  # workers run a reaper thread too
    dispatch_grace: float = 5.0  # a queued job never handed to the broker is re-sent after this

    worker_id: str | None = None  # default: hostname:pid
    torch_threads: int | None = None  # worker: torch.set_num_threads (None: torch's default)
    # `fine serve` sets this for its embedded worker, which then exits when that process is gone
    worker_parent_pid: int | None = None
    parent_exit_grace: float = 10.0  # seconds of warm shutdown before an orphaned worker exits hard

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://") :]
            if url.startswith("postgresql://"):  # SQLAlchemy 2.1 would pick psycopg 3; we ship psycopg2
                url = "postgresql+psycopg2://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{(self.home / 'fine.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.redis_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.home / "broker").resolve()

    @property
    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.home / "blobs").resolve()

    @property
    def work_dir(self) -> Path:
        return (self.home / "work").resolve()

    @property
    def resolved_default_learngene(self) -> Path:
        """Relative paths are tried in the working directory, then in the source checkout."""
        path = self.default_learngene
        if path.is_absolute() or path.exists():
            return path
        in_checkout = Path(__file__).resolve().parent.parent / path
        return in_checkout if in_checkout.exists() else path

    @property
    def embedded(self) -> bool:
        return self.redis_url is None


@lru_cache
def get_settings() -> Settings:
    return Settings()
