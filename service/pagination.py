"""Opaque cursors for keyset pagination over (created_at, id), newest first."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from service.errors import Problem


def encode_cursor(created_at: datetime, id_: str) -> str:
    raw = json.dumps([created_at.isoformat(), id_]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, id_ = json.loads(raw)
        return datetime.fromisoformat(ts), str(id_)
    except (ValueError, TypeError):
        raise Problem(400, "invalid cursor; pass the next_cursor value from the previous page unchanged",
                      type_="invalid-cursor") from None


def newest_first(session: Session, q: Select[Any], model: Any, request: Request, response: Response,
                 cursor: str | None, limit: int) -> tuple[list[Any], str | None]:
    """One page of `q` over `model` (its created_at, id), newest first; sets a `Link: rel="next"` header."""
    if cursor:
        ts, last_id = decode_cursor(cursor)
        q = q.where(or_(model.created_at < ts, and_(model.created_at == ts, model.id < last_id)))
    rows = list(session.execute(q.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)).scalars())
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    if next_cursor:
        query = urlencode({**request.query_params, "cursor": next_cursor, "limit": limit})
        response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    return rows[:limit], next_cursor
