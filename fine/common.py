"""Torch-free rules the method shares with persistence (standard library, numpy and fine.spec only).

The arrays an uploaded `.npz` must hold, file hashes and the JSON-or-string values of safetensors
metadata: fine.data / fine.formats and learngene_store use these, so the API (which never imports
torch) and the worker apply the same rules. Dataset names are the job spec's (fine.spec).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from fine.spec import MAX_CLASSES, DatasetError

MIN_IMAGES = 8  # fewer images than this cannot even fill one evaluation batch
MAX_SIDE = 256


def check_arrays(x: np.ndarray, y: np.ndarray | None, max_images: int = 200_000) -> tuple[np.ndarray, int]:
    """Check images (and labels) of a dataset; returns the images as N x H x W x C and the class count."""
    if x.dtype != np.uint8:
        raise DatasetError(f"'images' must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise DatasetError(f"'images' must be N x H x W or N x H x W x C with C in (1, 3), got shape {x.shape}")
    n, h, w, _ = x.shape
    if h != w:
        raise DatasetError(f"images must be square, got {h}x{w}")
    if not 4 <= h <= MAX_SIDE:
        raise DatasetError(f"image side must be between 4 and {MAX_SIDE} pixels, got {h}")
    if n < MIN_IMAGES:
        raise DatasetError(f"needs at least {MIN_IMAGES} images, got {n}")
    if n > max_images:
        raise DatasetError(f"at most {max_images} images are accepted, got {n}")
    if y is None:
        return x, 1
    if y.ndim != 1 or y.shape[0] != n:
        raise DatasetError(f"'labels' must be a vector of {n} entries, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"'labels' must be integers, got {y.dtype}")
    if y.min() < 0 or y.max() >= MAX_CLASSES:
        raise DatasetError(f"labels must be in 0..{MAX_CLASSES - 1}, got {y.min()}..{y.max()}")
    return x, int(y.max()) + 1


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def maybe_json(v: object) -> object:
    """A metadata value decoded from JSON where it is JSON, else as it is."""
    if not isinstance(v, str):
        return v
    try:
        return json.loads(v)
    except ValueError:
        return v
