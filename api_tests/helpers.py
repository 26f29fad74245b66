"""Small synthetic data for the tests (nothing is downloaded)."""

from __future__ import annotations

import io

import numpy as np


def npz_bytes(n: int = 16, side: int = 8, classes: int = 10, dtype: str = "uint8", seed: int = 0,
              labels_len: int | None = None, rect: bool = False, key: str = "images",
              negative_label: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (n, side, side + 1) if rect else (n, side, side)
    images = rng.integers(0, 256, size=shape).astype(dtype)
    labels = rng.integers(0, classes, size=labels_len if labels_len is not None else n).astype(np.int64)
    labels[: min(classes, len(labels))] = np.arange(min(classes, len(labels)))  # every class present
    if negative_label:
        labels[0] = -1
    buf = io.BytesIO()
    np.savez_compressed(buf, **{key: images, "labels": labels})
    return buf.getvalue()
