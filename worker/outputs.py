"""Storing a finished job's files in the blob store, ready to register as one checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from learngene_store.blobs import BlobStore

log = logging.getLogger(__name__)

MEDIA = {
    "dense": ("model.safetensors", "application/octet-stream"),
    "factored": ("factored.safetensors", "application/octet-stream"),
    "config": ("config.json", "application/json"),
    "samples": ("samples.png", "image/png"),
    "metrics": ("metrics.json", "application/json"),
    "diffusers": ("diffusers.zip", "application/zip"),
    "curve": ("curve.png", "image/png"),
    "losses": ("curve.json", "application/json"),
}


def export_diffusers_zip(dense_dir: Path) -> Path | None:
    """The diffusers layout of the dense checkpoint as a zip; None when diffusers cannot express the model."""
    from fine.export_diffusers import export_diffusers

    try:
        out = export_diffusers(dense_dir, dense_dir / "diffusers")
    except Exception as e:  # e.g. an architecture diffusers cannot express
        log.warning("diffusers export skipped: %s", e)
        return None
    return Path(shutil.make_archive(str(dense_dir / "diffusers"), "zip", root_dir=out))


def store_files(store: BlobStore, files: dict[str, Path]) -> list[dict[str, Any]]:
    rows = []
    for fmt, path in sorted(files.items()):
        if fmt not in MEDIA or path is None or not Path(path).exists():
            continue
        sha, size = store.put_file(Path(path))
        filename, media = MEDIA[fmt]
        rows.append({"format": fmt, "filename": filename, "media_type": media, "sha256": sha, "bytes": size})
    return rows
