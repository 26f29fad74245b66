"""Every setting at once, for a process that is API and worker together (tests, one-machine tools)."""

from __future__ import annotations

from service.settings import ApiSettings
from worker.settings import WorkerSettings


class Settings(ApiSettings, WorkerSettings):
    """The API's and the worker's settings in one object."""
