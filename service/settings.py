"""What the API reads (on top of the dispatch and store settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from dispatch.settings import DispatchSettings
from fine.spec import DEFAULT_LEARNGENE, default_learngene


class ApiSettings(DispatchSettings):
    """An API process's settings (FINE_* environment variables)."""

    default_learngene: Path = DEFAULT_LEARNGENE  # registered at start-up when the registry has none
    register_default_learngene: bool = True

    # limits
    max_upload_bytes: int = 64 * 1024 * 1024
    max_upload_images: int = 200_000

    @property
    def resolved_default_learngene(self) -> Path:
        return default_learngene(self.default_learngene)


@lru_cache
def get_settings() -> ApiSettings:
    return ApiSettings()
