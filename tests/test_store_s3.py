"""The S3 blob store against a real S3-compatible HTTP endpoint (moto's server, if installed)."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fine_zoo.settings import Settings
from learngene_store.blobs import BlobCorrupt, BlobMissing, S3BlobStore, make_blob_store

pytest.importorskip("moto.server", reason="needs moto[server] for an S3-compatible endpoint")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_s3_roundtrip(tmp_path: Path, endpoint: str) -> None:
    settings = Settings(home=tmp_path, s3_bucket="fine-blobs", s3_endpoint_url=endpoint, s3_region="us-east-1",
                        s3_access_key_id="test", s3_secret_access_key="test")
    store = make_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    store.client.create_bucket(Bucket="fine-blobs")
    store.check()
    sha, n = store.put_stream(io.BytesIO(b"dense weights" * 100))
    assert n == 1300 and store.exists(sha)
    # a second process (fresh cache) downloads and verifies it
    other = S3BlobStore(Settings(home=tmp_path / "other", s3_bucket="fine-blobs", s3_endpoint_url=endpoint,
                                 s3_region="us-east-1", s3_access_key_id="test", s3_secret_access_key="test"))
    assert other.local_path(sha).read_bytes() == b"dense weights" * 100
    with pytest.raises(BlobMissing):
        other.local_path("f" * 64)
    # an object whose bytes do not match its key is refused
    fake = "e" * 64
    other.client.put_object(Bucket="fine-blobs", Key=f"blobs/{fake}", Body=b"tampered")
    with pytest.raises(BlobCorrupt):
        other.local_path(fake)
    # the orphan collector's view: list, re-put (refreshes the age), delete
    assert sha in dict(store.stored())
    assert store.put_stream(io.BytesIO(b"dense weights" * 100)) == (sha, 1300)
    assert dict(store.stored())[sha] < 60
    store.delete(sha)
    assert not store.exists(sha) and sha not in dict(store.stored())
