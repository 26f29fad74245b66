"""Colour datasets generated offline, deterministically, from the grayscale ones on the machine.

- `colour-fashion-mnist` (32x32 RGB, 60k/10k, Fashion-MNIST's split): every garment gets its own
  foreground hue, saturation and brightness, a texture (stripes, checker or smooth noise at a
  random frequency, angle and phase, or none) and a background (solid or a two-colour gradient).
  The source domain of the colour learngene.
- `colour-mnist-5k` (32x32 RGB, 4,000/1,000 by `fine.data.split_fixed`): a different look on
  purpose: bright two-tone digit strokes with a dark or light outline and a drop shadow, on a
  grainy multi-colour blob background.
- `colour-mnist-5k-garment` (32x32 RGB, 4,000/1,000 by `split_fixed`): the same MNIST 5k digits in the
  colour-fashion-mnist look, so that a target shares the colour learngene's colours but not its shapes
  (a second colour target that no learngene is trained on; colour-mnist-5k differs in both).
- `colour-digits` (8x8 RGB, 1,438/359 by `split_fixed`): sklearn's digits in the
  colour-fashion-mnist scheme; a tiny set for tests, built in well under a second.

All randomness is a counter-based hash of (dataset, split, image index, parameter), so each image's
look depends on its index alone: every run and chunk size gives identical bytes (the draws are
integer arithmetic, identical everywhere; the colour maths is float64 numpy). Generated
arrays are cached under `cache_dir()` in files named by `VERSION`; bump it whenever a recipe changes.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fine.data import ImageData

VERSION = "1"
COLOUR_DATASETS = ("colour-fashion-mnist", "colour-mnist-5k", "colour-digits", "colour-mnist-5k-garment")
_DATASET_KEY = {name: i + 1 for i, name in enumerate(COLOUR_DATASETS)}  # append only: keys pick the draws
_CHUNK = 1024  # images generated at once (bounds memory; results do not depend on it)


def cache_dir() -> Path:
    """Where generated colour arrays are kept: $FINE_CACHE_DIR, else $XDG_CACHE_HOME/fine-zoo or ~/.cache/fine-zoo."""
    if os.environ.get("FINE_CACHE_DIR"):
        return Path(os.environ["FINE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fine-zoo"


# -- counter-based randomness --------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def image_keys(base: str, split: str, index: np.ndarray) -> np.ndarray:
    """One uint64 key per image from (dataset, split, index): the seed of that image's stream."""
    split_id = {"train": 1, "test": 2, "all": 3}[split]
    head = (_DATASET_KEY[base] << 40) | (split_id << 32)
    return np.uint64(head) | np.asarray(index, dtype=np.uint64)


def uniform(keys: np.ndarray, stream: int, count: int) -> np.ndarray:
    """(N, count) float64 uniforms in [0, 1): position j of stream `stream` of each image's key."""
    seed = _mix(keys.astype(np.uint64) ^ _mix(np.full(1, stream, np.uint64) * _GOLDEN))
    z = _mix(seed[:, None] + (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None])
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# -- image helpers -------------------------------------------------------------------------------
def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; the result has a trailing axis of 3."""
    h, s, v = (np.asarray(a, dtype=np.float64)[..., None] for a in (h, s, v))
    k = (np.array([5.0, 3.0, 1.0]) + (h % 1.0) * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _upsample_matrix(k: int, side: int) -> np.ndarray:
    """(side, k) bilinear interpolation weights from a k-grid to `side` pixels (edge-clamped)."""
    pos = np.clip((np.arange(side) + 0.5) * k / side - 0.5, 0, k - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, k - 1)
    frac = pos - lo
    a = np.zeros((side, k))
    a[np.arange(side), lo] += 1 - frac
    a[np.arange(side), hi] += frac
    return a


def smooth_noise(keys: np.ndarray, stream: int, grid: int, side: int, channels: int = 1) -> np.ndarray:
    """(N, side, side, channels) value noise: a random grid x grid field, bilinearly upsampled."""
    g = uniform(keys, stream, grid * grid * channels).reshape(len(keys), grid, grid, channels)
    a = _upsample_matrix(grid, side)
    return np.einsum("yi,nijc,xj->nyxc", a, g, a)


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Grey-scale dilation of (N, H, W) masks by a (2r+1) square."""
    h, w = mask.shape[1:]
    p = np.pad(mask, ((0, 0), (radius, radius), (radius, radius)))
    shifts = [p[:, dy : dy + h, dx : dx + w] for dy in range(2 * radius + 1) for dx in range(2 * radius + 1)]
    return np.max(shifts, axis=0)


def shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(N, H, W) masks moved down by dy and right by dx (zeros shifted in)."""
    h, w = mask.shape[1:]
    p = np.pad(mask, ((0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))))
    return p[:, max(-dy, 0) : max(-dy, 0) + h, max(-dx, 0) : max(-dx, 0) + w]


def pad_to(gray: np.ndarray, side: int) -> np.ndarray:
    """Zero-pad (N, H, W) images evenly to side x side."""
    before = (side - gray.shape[1]) // 2
    after = side - gray.shape[1] - before
    return np.pad(gray, ((0, 0), (before, after), (before, after)))


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) floats in [0, 1] -> (N, 3, H, W) uint8."""
    return np.ascontiguousarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 3, 1, 2))


# -- recipes -------------------------------------------------------------------------------------
def garment_style(gray: np.ndarray, keys: np.ndarray, texture: float = 1.0) -> np.ndarray:
    """The colour-fashion-mnist look: hue, texture (scaled by `texture`) and background per image; (N, 3, S, S) uint8."""
    side = gray.shape[1]
    g = gray.astype(np.float64) / 255.0
    p = uniform(keys, 1, 18)
    yy, xx = np.meshgrid(np.arange(side) / side, np.arange(side) / side, indexing="ij")

    # Foreground: a main colour and a texture colour (shifted hue, darker), shaded by the garment.
    hue = p[:, 0]
    sat = 0.45 + 0.55 * p[:, 1]
    val = 0.7 + 0.3 * p[:, 2]
    c1 = hsv_to_rgb(hue, sat, val)
    c2 = hsv_to_rgb(hue + np.where(p[:, 3] < 0.5, -1, 1) * (0.06 + 0.2 * p[:, 4]), sat, val * (0.35 + 0.3 * p[:, 5]))

    # Texture in [0, 1]: 0 none, 1 stripes, 2 checker, 3 smooth noise.
    kind = np.floor(p[:, 6] * 4).astype(int)
    freq = (2 + 5 * p[:, 7])[:, None, None]
    ang = (np.pi * p[:, 8])[:, None, None]
    phase = (2 * np.pi * p[:, 9])[:, None, None]
    u = 2 * np.pi * freq * (xx * np.cos(ang) + yy * np.sin(ang)) + phase
    v = 2 * np.pi * freq * (-xx * np.sin(ang) + yy * np.cos(ang)) + phase
    stripes = 0.5 + 0.5 * np.clip(3 * np.sin(u), -1, 1)
    checker = 0.5 + 0.5 * np.clip(6 * np.sin(u) * np.sin(v), -1, 1)
    noise = np.clip((smooth_noise(keys, 2, 5, side)[..., 0] - 0.5) * 2.5 + 0.5, 0, 1)
    tex = np.select([kind[:, None, None] == k for k in (1, 2, 3)], [stripes, checker, noise], 0.0)
    fg = _lerp(c1[:, None, None], c2[:, None, None], texture * tex[..., None])
    fg = fg * (0.35 + 0.65 * g)[..., None]

    # Background: solid or a linear gradient, hue at least a quarter turn away from the garment.
    bh = hue + 0.25 + 0.5 * p[:, 10]
    b1 = hsv_to_rgb(bh, 0.15 + 0.6 * p[:, 11], 0.1 + 0.85 * p[:, 12])
    b2 = hsv_to_rgb(bh + 0.3 * (p[:, 13] - 0.5), 0.15 + 0.6 * p[:, 14], 0.1 + 0.85 * p[:, 15])
    b2 = np.where((p[:, 16] < 0.4)[:, None], b1, b2)  # 40% solid
    dang = 2 * np.pi * p[:, 17]
    proj = (xx - 0.5) * np.cos(dang)[:, None, None] + (yy - 0.5) * np.sin(dang)[:, None, None]
    t_bg = np.clip(proj / 0.71 * 0.5 + 0.5, 0, 1)
    bg = _lerp(b1[:, None, None], b2[:, None, None], t_bg[..., None])

    alpha = np.clip(g / 0.3, 0, 1)[..., None]
    return _to_uint8(_lerp(bg, fg, alpha))


def sticker_style(gray: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The colour-mnist-5k look: outlined two-tone strokes with a shadow on grainy blobs; (N, 3, S, S) uint8."""
    n, side = gray.shape[0], gray.shape[1]
    m = gray.astype(np.float64) / 255.0
    p = uniform(keys, 1, 8)

    # Background: several colour blobs (a 4x4 random colour field), plus per-pixel grain.
    bg = 0.15 + 0.7 * smooth_noise(keys, 2, 4, side, 3)
    bg = bg + 0.16 * (uniform(keys, 3, side * side * 3).reshape(n, side, side, 3) - 0.5)

    # Strokes: saturated colour fading to a second hue from top to bottom.
    hue = p[:, 0]
    top = hsv_to_rgb(hue, 0.75 + 0.25 * p[:, 1], 0.95)
    bottom = hsv_to_rgb(hue + 0.1 + 0.15 * p[:, 2], 0.75 + 0.25 * p[:, 1], 0.85)
    t = np.linspace(0, 1, side)[None, :, None, None]
    stroke = _lerp(top[:, None, None], bottom[:, None, None], t)

    # Outline black or white (mostly black), and a drop shadow 2 px down-right.
    line = np.where((p[:, 3] < 0.75)[:, None], 0.05, 0.97) * np.ones((n, 3))
    shadow = dilate(shift(m, 2, 2))[..., None]
    outline = np.clip(dilate(m) * 1.5, 0, 1)[..., None]
    img = bg * (1 - 0.55 * shadow)
    img = _lerp(img, line[:, None, None], outline)
    img = _lerp(img, stroke, np.clip(m * 1.6, 0, 1)[..., None])
    return _to_uint8(img)


# -- datasets ------------------------------------------------------------------------------------
def _source(base: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    """The grayscale source images (N, H, W) uint8 and labels of a colour dataset's part."""
    from fine import data as fdata

    if base == "colour-fashion-mnist":
        src = fdata.load_fashion_mnist(part)
    elif base in ("colour-mnist-5k", "colour-mnist-5k-garment"):
        src = fdata.load_mnist5k_all()
    else:
        src = fdata.load_digits_all()
    return src.images[:, 0].numpy(), src.labels.numpy()


def _parts(base: str) -> tuple[str, ...]:
    return ("train", "test") if base == "colour-fashion-mnist" else ("all",)


def generate(base: str, part: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Generate one part ('train'/'test', or 'all') of a colour dataset: (N, 3, S, S) uint8 and labels."""
    if base not in COLOUR_DATASETS or part not in _parts(base):
        raise ValueError(f"no part {part!r} of {base!r}")
    gray, labels = _source(base, part)
    if limit is not None:
        gray, labels = gray[:limit], labels[:limit]
    side = 8 if base == "colour-digits" else 32
    if base == "colour-mnist-5k":
        style = sticker_style
    else:  # at 8x8 a full-strength texture hides the digit
        style = partial(garment_style, texture=0.35 if side == 8 else 1.0)
    keys = image_keys(base, part, np.arange(len(gray)))
    out = np.empty((len(gray), 3, side, side), np.uint8)
    for i in range(0, len(gray), _CHUNK):
        out[i : i + _CHUNK] = style(pad_to(gray[i : i + _CHUNK], side), keys[i : i + _CHUNK])
    return out, labels.astype(np.int64)


def cache_path(base: str, part: str) -> Path:
    return cache_dir() / f"{base}-{part}-v{VERSION}.npz"


def cached(base: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    """`generate(base, part)`, from the cache file when there is a readable one, else written to it."""
    path = cache_path(base, part)
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["images"], z["labels"]
    except (OSError, KeyError, ValueError):
        pass  # missing or unreadable: regenerate
    images, labels = generate(base, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, path)
    return images, labels


def load_colour(base: str, split: str) -> ImageData:
    """A colour dataset's train or test split as ImageData (generated once, then cached)."""
    import torch

    from fine.data import DataError, ImageData, split_fixed

    if base not in COLOUR_DATASETS:
        raise DataError(f"unknown colour dataset {base!r}: use one of {', '.join(COLOUR_DATASETS)}")
    part = split if base == "colour-fashion-mnist" else "all"
    images, labels = cached(base, part)
    data = ImageData(torch.from_numpy(images), torch.from_numpy(labels), 10, base)
    return data if part == split else split_fixed(data, split)
