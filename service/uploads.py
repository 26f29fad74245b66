"""Receiving uploaded files: size limits before and while reading, spooled to a temp dir."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import Request, UploadFile

from service.errors import Problem

CHUNK = 1024 * 1024


def check_declared_size(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 64 * 1024:  # multipart framing slack
        raise Problem(413, f"upload of {int(length)} bytes exceeds the limit of {limit} bytes "
                           "(FINE_MAX_UPLOAD_BYTES)", type_="upload-too-large")


@contextmanager
def spooled(upload: UploadFile, limit: int, work_dir: Path, name: str) -> Iterator[Path]:
    """Copy an upload to a private temp dir as `name`, enforcing the limit; removed afterwards."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=work_dir, prefix="upload-"))
    try:
        dest = tmp / name
        n = 0
        with open(dest, "wb") as out:
            while chunk := upload.file.read(CHUNK):
                n += len(chunk)
                if n > limit:
                    raise Problem(413, f"upload exceeds the limit of {limit} bytes (FINE_MAX_UPLOAD_BYTES)",
                                  type_="upload-too-large")
                out.write(chunk)
        if n == 0:
            raise Problem(422, "the uploaded file is empty", type_="empty-upload")
        yield dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
