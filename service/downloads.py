"""Serving blobs: ETag = sha256, conditional requests, single byte ranges (resume), HEAD."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from service.errors import Problem

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """'bytes=a-b' -> (start, end inclusive); None for a range we ignore (serve everything)."""
    m = _RANGE.match(header.strip())
    if not m:
        return None  # multiple or malformed ranges: RFC 9110 lets us answer with the full body
    a, b = m.groups()
    if a == "" and b == "":
        return None
    if a == "":
        n = int(b)
        if n == 0:
            raise Problem(416, f"empty suffix range; the file has {size} bytes",
                          headers={"Content-Range": f"bytes */{size}"})
        return max(0, size - n), size - 1
    start = int(a)
    end = min(int(b), size - 1) if b else size - 1
    if start >= size or end < start:
        raise Problem(416, f"range {header} is outside the file of {size} bytes; request bytes=0-{size - 1} "
                           "or a part of it", headers={"Content-Range": f"bytes */{size}"})
    return start, end


def _iter_file(path: Path, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def serve_blob(request: Request, path: Path, sha256: str, media_type: str, filename: str,
               inline: bool = False) -> Response:
    size = os.path.getsize(path)
    etag = f'"{sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{filename}"',
        "Cache-Control": "public, max-age=31536000, immutable",  # content-addressed: never changes
        "Digest": f"sha-256={sha256}",
    }
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]):
        return Response(status_code=304, headers=headers)
    start, end = 0, size - 1
    status = 200
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header and (if_range is None or if_range.strip() == etag):
        parsed = _parse_range(range_header, size)
        if parsed is not None:
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1 if size else 0
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(_iter_file(path, start, length), status_code=status, headers=headers,
                             media_type=media_type)
