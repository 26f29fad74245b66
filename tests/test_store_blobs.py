"""The local content-addressed blob store: atomic writes, hash-verified reads, size limits."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from learngene_store.blobs import BlobCorrupt, BlobMissing, LocalBlobStore, copy_out


def test_put_and_read_back(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = b"learngene" * 1000
    sha, n = store.put_stream(io.BytesIO(data))
    assert sha == hashlib.sha256(data).hexdigest() and n == len(data)
    assert store.exists(sha) and store.local_path(sha).read_bytes() == data
    assert store.put_stream(io.BytesIO(data)) == (sha, n)  # same content, same key, no duplicate
    assert not list((tmp_path / "blobs" / "tmp").glob(".incoming-*"))  # temp files are gone
    out = copy_out(store, sha, tmp_path / "x" / "copy.bin")
    out.write_bytes(b"changed")  # a copy: the stored blob is untouched
    assert store.local_path(sha).read_bytes() == data


def test_corruption_is_detected(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    sha, _ = store.put_stream(io.BytesIO(b"abc"))
    path = store.local_path(sha)
    path.write_bytes(b"abd")
    with pytest.raises(BlobCorrupt, match="corrupt"):
        store.local_path(sha)


def test_missing_and_bad_keys(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobMissing):
        store.local_path("0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        store.local_path("../../etc/passwd")


def test_size_limit_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(ValueError, match="limit"):
        store.put_stream(io.BytesIO(b"x" * 100), max_bytes=10)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_orphaned_blobs_are_collected(tmp_path: Path) -> None:
    import os

    from fine_zoo.settings import Settings
    from learngene_store.blobs import make_blob_store
    from learngene_store.db import migrate, session_factory
    from learngene_store.gc import collect_orphans
    from learngene_store.models import Dataset

    settings = Settings(home=tmp_path)
    migrate(settings)
    store = make_blob_store(settings)
    kept, orphan, young = (store.put_stream(io.BytesIO(b))[0] for b in (b"named", b"orphan", b"young"))
    old = 10_000
    for sha in (kept, orphan):
        path = store.local_path(sha)
        os.utime(path, (path.stat().st_atime - old, path.stat().st_mtime - old))
    with session_factory(settings)() as s:
        s.add(Dataset(id="ds_x", kind="upload", name="x", sha256=kept, bytes=5, num_images=8, image_size=8,
                      channels=1, num_classes=1, owner="u"))
        s.commit()
        assert collect_orphans(s, store, grace=3600, dry_run=True).deleted == [orphan]
        assert store.exists(orphan)
        done = collect_orphans(s, store, grace=3600)
    assert done.deleted == [orphan] and done.kept == 1 and done.young == 1
    assert not store.exists(orphan) and store.exists(kept) and store.exists(young)
    store.put_stream(io.BytesIO(b"named"))  # putting a blob again makes it young
    assert store.stored() and dict(store.stored())[kept] < 60
