"""Datasets the service knows: the built-in ones and validation of uploaded `.npz` files.

The rules mirror `fine.data.validate_arrays` (numpy only: the API never imports torch):
`images` uint8 of shape N x H x W or N x H x W x C (C in 1, 3), square, side 4..256,
at least 8 images; optional integer `labels`, one per image, in 0..999.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_IMAGES = 8
MAX_CLASSES = 1000
MAX_SIDE = 256


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
)


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one line a person can act on."""


def parse_name(name: str) -> tuple[str, list[int] | None]:
    """'fashion-mnist:5-9' -> ('fashion-mnist', [5, 6, 7, 8, 9])."""
    base, _, spec = name.partition(":")
    if not spec:
        return base, None
    classes: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            a, b = int(lo), int(hi or lo)
            if b < a or b - a > MAX_CLASSES:
                raise ValueError
            classes.extend(range(a, b + 1))
    except ValueError:
        raise DatasetError(f"bad class filter {spec!r} in {name!r}: use e.g. ':5-9' or ':0,2,4'") from None
    return base, sorted(set(classes))


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
    if x.dtype != np.uint8:
        raise DatasetError(f"'images' must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise DatasetError(f"'images' must be N x H x W or N x H x W x C with C in (1, 3), got shape {x.shape}")
    n, h, w, c = x.shape
    if h != w:
        raise DatasetError(f"images must be square, got {h}x{w}")
    if not 4 <= h <= MAX_SIDE:
        raise DatasetError(f"image side must be between 4 and {MAX_SIDE} pixels, got {h}")
    if n < MIN_IMAGES:
        raise DatasetError(f"needs at least {MIN_IMAGES} images, got {n}")
    if n > max_images:
        raise DatasetError(f"at most {max_images} images are accepted, got {n}")
    num_classes = 1
    if y is not None:
        if y.ndim != 1 or y.shape[0] != n:
            raise DatasetError(f"'labels' must be a vector of {n} entries, got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(f"'labels' must be integers, got {y.dtype}")
        if y.min() < 0 or y.max() >= MAX_CLASSES:
            raise DatasetError(f"labels must be in 0..{MAX_CLASSES - 1}, got {y.min()}..{y.max()}")
        num_classes = int(y.max()) + 1
    return DatasetInfo(id="", num_images=n, image_size=h, channels=c, num_classes=num_classes, description="")
