"""What persistence reads: the database and the blob store (pydantic-settings).

With no environment at all everything is *embedded*: a SQLite file and a blob directory under
`FINE_HOME` (default `./var`). Set `DATABASE_URL` (PostgreSQL) and the `FINE_S3_*` variables for
the distributed set-up. The broker's settings are dispatch/settings.py's, the API's
service/settings.py's and a worker's worker/settings.py's; each extends this one.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    """Where the registry and the blobs live."""

    model_config = SettingsConfigDict(env_prefix="FINE_", extra="ignore")

    home: Path = Path("var")  # FINE_HOME: root of everything embedded mode writes
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "FINE_DATABASE_URL")
    )

    # blob store: local directory unless an S3 bucket is named
    blob_dir: Path | None = None  # default: <home>/blobs
    s3_bucket: str | None = None
    s3_prefix: str = "blobs/"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

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
    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.home / "blobs").resolve()

    @property
    def work_dir(self) -> Path:
        return (self.home / "work").resolve()
