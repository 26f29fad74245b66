"""bench/position_size.py: the numpy resizing and the conclusion it states."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from position_size import conclusion, resize  # noqa: E402


def test_resize_nearest_and_bilinear() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 7, 7)).astype(np.uint8)
    assert resize(img, 7) is img
    near = resize(img, 14, "nearest")
    assert near.shape == (3, 14, 14) and (near[:, ::2, ::2] == img).all() and (near[:, 1::2, 1::2] == img).all()
    flat = np.full((2, 28, 28), 77, np.uint8)
    assert (resize(flat, 32) == 77).all() and (resize(flat, 112) == 77).all()  # weights sum to one
    ramp = np.tile((np.arange(28) * 9).astype(np.uint8), (1, 28, 1))
    up = resize(ramp, 56).astype(int)
    assert (np.diff(up[0, 0]) >= 0).all() and up[0, 0, 0] == 0 and up[0, 0, -1] == 243  # monotone, no ringing
    assert abs(up[0, 0].mean() - ramp[0, 0].mean()) < 1.0
    assert resize(img, 32).dtype == np.uint8


def test_conclusion_is_the_last_side_of_an_unbroken_run_of_wins() -> None:
    def rows(pairs):  # type: ignore[no-untyped-def]
        out = []
        for side, (fine, scratch) in pairs.items():
            out += [{"side": side, "method": "fine", "heldout_after": fine},
                    {"side": side, "method": "scratch", "heldout_after": scratch}]
        return {"rows": out}

    assert conclusion(rows({28: (0.1, 0.2), 56: (0.1, 0.2), 112: (0.3, 0.2)})) == \
        "FINE beats scratch at equal steps up to 56x56; at 112x112 it does not."
    assert conclusion(rows({28: (0.1, 0.2), 56: (0.3, 0.2), 84: (0.1, 0.2)})).endswith("up to 28x28; at 56x56 it does not.")
    assert "up to 112x112 (every side measured)" in conclusion(rows({28: (0.1, 0.2), 112: (0.1, 0.2)}))
    assert conclusion(rows({28: (0.3, 0.2)})).startswith("FINE did not beat scratch")
