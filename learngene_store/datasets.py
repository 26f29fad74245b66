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

from fine.common import check_arrays
from fine.spec import DatasetError


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
    DatasetInfo("colour-mnist-5k-garment", 5_000, 32, 3, 10,
                "MNIST 5k in colour-fashion-mnist's look (hue, texture, background), 32x32 RGB, fixed 80/20 split"),
)


MAX_MEMBERS = 16


def check_declared_sizes(path: Path, max_unpacked: int) -> None:
    """Refuse a zip bomb before unpacking: the central directory's sizes and each .npy header's
    shape and dtype (read from the first bytes of the member) must fit `max_unpacked` in total."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise DatasetError(f"the archive has {len(infos)} members; an upload holds 'images' and 'labels' only")
        declared = sum(i.file_size for i in infos)
        if declared > max_unpacked:
            raise DatasetError(f"the archive unpacks to {declared} bytes, over the limit of {max_unpacked} "
                               "(FINE_MAX_UPLOAD_UNPACKED_BYTES)")
        arrays = 0
        for info in infos:
            with zf.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = reader(f, max_header_size=10_000)
                except ValueError as e:
                    raise DatasetError(f"member {info.filename} is not a .npy array ({e})") from None
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > info.file_size:
                raise DatasetError(f"member {info.filename} declares {shape} {dtype} ({nbytes} bytes) but holds "
                                   f"{info.file_size} bytes: a corrupt or crafted archive")
            arrays += nbytes
        if arrays > max_unpacked:
            raise DatasetError(f"the arrays declare {arrays} bytes, over the limit of {max_unpacked} "
                               "(FINE_MAX_UPLOAD_UNPACKED_BYTES)")


def validate_npz(path: Path, max_images: int = 200_000, max_unpacked: int = 256 * 1024 * 1024) -> DatasetInfo:
    """Open an uploaded .npz with numpy (no pickles) and check it; returns its shape summary.
    Sizes are checked from the zip directory and .npy headers before anything is unpacked."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise DatasetError("not an .npz file: expected the zip archive numpy.savez writes")
    try:
        check_declared_sizes(path, max_unpacked)
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
