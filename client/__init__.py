"""A Python client for the fine-zoo HTTP API (httpx): jobs, live events, checkpoints, learngenes, datasets."""

from client.api import ApiError, Client, DownloadResult
from client.sse import Event, parse_events

__all__ = ["ApiError", "Client", "DownloadResult", "Event", "parse_events"]
