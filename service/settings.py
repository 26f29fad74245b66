"""What the API reads (on top of the dispatch and store settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from dispatch.settings import DispatchSettings
from fine.spec import DEFAULT_LEARNGENE, SHIPPED_LEARNGENES, default_learngene


class ApiSettings(DispatchSettings):
    """An API process's settings (FINE_* environment variables)."""

    default_learngene: Path = DEFAULT_LEARNGENE  # registered at start-up; the `default` alias unless an admin moved it
    register_default_learngene: bool = True

    # accounts: write an admin key to <home>/admin.key on first start (None: in embedded mode only)
    bootstrap_admin: bool | None = None

    # limits (every one defined here, once; admins are exempt from the per-user quotas)
    max_upload_bytes: int = 64 * 1024 * 1024  # one upload (dataset or learngene file)
    max_upload_images: int = 200_000
    max_upload_unpacked_bytes: int = 256 * 1024 * 1024  # an .npz's arrays, as declared before unpacking
    quota_active_jobs: int = 4  # queued + running jobs per user
    quota_steps_per_day: int = 200_000  # training steps (sigma + fine-tune + pre-training) per user per 24 h
    quota_stored_bytes: int = 2 * 1024 ** 3  # uploads + learngenes + checkpoint files per user
    write_rate_per_minute: int = 60  # POST requests per user per minute

    @property
    def admin_key_file(self) -> Path:
        return self.home / "admin.key"

    @property
    def writes_admin_key(self) -> bool:
        return self.embedded if self.bootstrap_admin is None else self.bootstrap_admin

    @property
    def resolved_default_learngene(self) -> Path:
        return default_learngene(self.default_learngene)

    @property
    def shipped_versions(self) -> dict[str, Path]:
        """The checkout's learngene versions, registered beside the default; none when another default is set (tests)."""
        if self.resolved_default_learngene != default_learngene(DEFAULT_LEARNGENE):
            return {}
        return {name: default_learngene(path) for name, path in SHIPPED_LEARNGENES.items()}


@lru_cache
def get_settings() -> ApiSettings:
    return ApiSettings()
