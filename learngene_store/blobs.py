"""Content-addressed blob store: a blob's key is the sha256 of its bytes.

Writes are atomic (temp file + os.replace locally, a completed upload on S3). Reads verify the
hash: nothing is handed out that does not match the key it was stored under.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from fine.common import sha256_file
from learngene_store.settings import StoreSettings

CHUNK = 1024 * 1024
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobError(RuntimeError):
    """A blob that is missing or does not match its hash."""


class BlobMissing(BlobError):
    pass


class BlobCorrupt(BlobError):
    pass


def _check_key(sha256: str) -> None:
    if not _SHA_RE.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")


class BlobStore(Protocol):
    def put_file(self, path: Path) -> tuple[str, int]:
        """Store a file; returns (sha256, bytes)."""

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
        """Store a stream; raises ValueError past max_bytes."""

    def local_path(self, sha256: str) -> Path:
        """A local file holding the blob, verified against its hash."""

    def exists(self, sha256: str) -> bool: ...

    def stored(self) -> Iterator[tuple[str, float]]:
        """Every blob as (sha256, seconds since it was last written or re-put)."""
        ...

    def delete(self, sha256: str) -> None: ...

    def check(self) -> None:
        """Raise if the store cannot be used (readiness)."""


class _Verified:
    """Remembers files already hashed (by inode, size and mtime) so each is hashed once."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def verify(self, path: Path, sha256: str) -> None:
        st = path.stat()
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._seen.get(sha256) == stamp:
                return
        actual = sha256_file(path)
        if actual != sha256:
            raise BlobCorrupt(f"blob {sha256} is corrupt on disk (content hashes to {actual})")
        with self._lock:
            self._seen[sha256] = stamp


def _spool(stream: BinaryIO, directory: Path, max_bytes: int | None) -> tuple[Path, str, int]:
    """Copy a stream into a temp file in `directory`, hashing on the way."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incoming-")
    h, n = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                n += len(chunk)
                if max_bytes is not None and n > max_bytes:
                    raise ValueError(f"larger than the limit of {max_bytes} bytes")
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp), h.hexdigest(), n


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._verified = _Verified()

    def _path(self, sha256: str) -> Path:
        _check_key(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def _commit(self, tmp: Path, sha256: str) -> None:
        dest = self._path(sha256)
        if dest.exists():
            tmp.unlink()
            os.utime(dest)  # re-put: young again, so the orphan collector leaves it to its new row
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)  # atomic: readers see the whole blob or none

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
        tmp, sha, n = _spool(stream, self.root / "tmp", max_bytes)
        self._commit(tmp, sha)
        return sha, n

    def put_file(self, path: Path) -> tuple[str, int]:
        with open(path, "rb") as f:
            return self.put_stream(f)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def local_path(self, sha256: str) -> Path:
        path = self._path(sha256)
        if not path.exists():
            raise BlobMissing(f"blob {sha256} is not in the store at {self.root}")
        self._verified.verify(path, sha256)
        return path

    def stored(self) -> Iterator[tuple[str, float]]:
        now = time.time()
        for path in self.root.glob("??/??/*"):
            if _SHA_RE.match(path.name):
                yield path.name, now - path.stat().st_mtime

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / "tmp" / f".ready-{os.getpid()}"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()


class S3BlobStore:
    """An S3-compatible bucket; reads go through a verified local cache."""

    def __init__(self, settings: StoreSettings) -> None:
        import boto3  # only needed when a bucket is configured

        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
        )
        self.cache = LocalBlobStore(settings.resolved_blob_dir / "s3-cache")

    def _key(self, sha256: str) -> str:
        _check_key(sha256)
        return f"{self.prefix}{sha256}"

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
        tmp, sha, n = _spool(stream, self.cache.root / "tmp", max_bytes)
        try:
            if not self.exists(sha):
                # upload_file completes a multipart upload only when every part arrived: atomic
                self.client.upload_file(str(tmp), self.bucket, self._key(sha),
                                        ExtraArgs={"Metadata": {"sha256": sha}})
            else:  # re-put: refresh LastModified so the orphan collector leaves it to its new row
                self.client.copy_object(Bucket=self.bucket, Key=self._key(sha), MetadataDirective="REPLACE",
                                        CopySource={"Bucket": self.bucket, "Key": self._key(sha)},
                                        Metadata={"sha256": sha})
        finally:
            self.cache._commit(tmp, sha)
        return sha, n

    def put_file(self, path: Path) -> tuple[str, int]:
        with open(path, "rb") as f:
            return self.put_stream(f)

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(sha256))
            return True
        except ClientError:
            return False

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(sha256))
        self.cache.delete(sha256)

    def local_path(self, sha256: str) -> Path:
        if not self.cache.exists(sha256):
            from botocore.exceptions import ClientError

            tmp_dir = self.cache.root / "tmp"
            tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".download-")
            os.close(fd)
            try:
                self.client.download_file(self.bucket, self._key(sha256), tmp)
            except ClientError as e:
                os.unlink(tmp)
                raise BlobMissing(f"blob {sha256} is not in bucket {self.bucket}: {e}") from None
            actual = sha256_file(Path(tmp))
            if actual != sha256:
                os.unlink(tmp)
                raise BlobCorrupt(f"blob {sha256} in bucket {self.bucket} hashes to {actual}")
            self.cache._commit(Path(tmp), sha256)
        return self.cache.local_path(sha256)

    def stored(self) -> Iterator[tuple[str, float]]:
        now = time.time()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.prefix):]
                if _SHA_RE.match(name):
                    yield name, now - obj["LastModified"].timestamp()

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


def make_blob_store(settings: StoreSettings) -> BlobStore:
    if settings.s3_bucket:
        return S3BlobStore(settings)
    return LocalBlobStore(settings.resolved_blob_dir)


def copy_out(store: BlobStore, sha256: str, dest: Path) -> Path:
    """Place a verified copy of a blob at dest (a copy, so nothing done to dest reaches the store)."""
    src = store.local_path(sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest
