"""Datasets the service knows: the built-in ones and validation of uploaded `.npz` files.

The rules are fine.common's, which fine.data applies too (numpy only: the API never imports torch):
`images` uint8 of shape N x H x W or N x H x W x C (C in 1, 3), square, side 4..256,
at least 8 images; optional integer `labels`, one per image, in 0..999.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fine.common import DatasetError, check_arrays


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    num_images: int
    image_size: int
    channels: int
    num_classes: int
    description: str


BUILTIN: tuple[DatasetInfo, ...] = (
    DatasetInfo("fashion-mnist", 60_000, 28, 1, 10, "Fashion-MNIST, 28x28 grayscale, 10 classes (train split)"),
    DatasetInfo("mnist-5k", 5_000, 28, 1, 10, "MNIST 5k (500 per digit), 28x28 grayscale, fixed 80/20 split"),
    DatasetInfo("digits", 1_797, 8, 1, 10, "scikit-learn digits, 8x8 grayscale, fixed 80/20 split"),
    DatasetInfo("colour-fashion-mnist", 60_000, 32, 3, 10,
                "Fashion-MNIST coloured offline: 32x32 RGB, per-image hue, texture and background (train split)"),
    DatasetInfo("colour-mnist-5k", 5_000, 32, 3, 10,
                "MNIST 5k coloured offline: 32x32 RGB strokes with outline and shadow on noisy blobs, fixed 80/20 split"),
    DatasetInfo("colour-digits", 1_797, 8, 3, 10, "scikit-learn digits coloured, 8x8 RGB, fixed 80/20 split"),
)


def validate_npz(path: Path, max_images: int = 200_000) -> DatasetInfo:
    """Open an uploaded .npz with numpy (no pickles) and check it; returns its shape summary."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise DatasetError("not an .npz file: expected the zip archive numpy.savez writes")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise DatasetError("not an .npz archive (looks like a single .npy array)")
            names = list(z.files)
            if "images" not in names:
                raise DatasetError(f"missing array 'images' (found: {', '.join(sorted(names)) or 'none'})")
            x = z["images"]
            y = z["labels"] if "labels" in names else None
    except DatasetError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise DatasetError(f"not a readable .npz file ({type(e).__name__}: {e})") from None
    return validate_arrays(x, y, max_images)


def validate_arrays(x: np.ndarray, y: np.ndarray | None, max_images: int = 200_000) -> DatasetInfo:
    """Check an upload's arrays (fine.common.check_arrays); returns its shape summary."""
    x, num_classes = check_arrays(x, y, max_images)
    n, h, _, c = x.shape
    return DatasetInfo(id="", num_images=n, image_size=h, channels=c, num_classes=num_classes, description="")
