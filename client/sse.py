"""Reading a Server-Sent Events stream (the WHATWG event-stream format) from lines of text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event: its type, its number in the job's log (None for `end`), its JSON data."""

    event: str
    id: int | None
    data: dict[str, Any]


def parse_events(lines: Iterable[str]) -> Iterator[Event]:
    """Events from a stream's lines (comments and `retry:` skipped; data lines joined, then parsed as JSON)."""
    kind, id_, data = "message", None, []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield Event(kind, int(id_) if id_ else None, json.loads("\n".join(data)))
            kind, id_, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            id_ = value
