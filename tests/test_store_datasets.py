"""Upload validation (numpy only) mirrors fine.data.validate_arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fine.spec import DatasetError
from fine.spec import parse_dataset_name as parse_name
from learngene_store.datasets import validate_arrays, validate_npz


def test_valid_npz(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, images=np.zeros((10, 8, 8, 3), np.uint8), labels=np.arange(10) % 3)
    info = validate_npz(p)
    assert (info.num_images, info.image_size, info.channels, info.num_classes) == (10, 8, 3, 3)


@pytest.mark.parametrize(("x", "y", "msg"), [
    (np.zeros((10, 8, 8), np.float32), None, "must be uint8"),
    (np.zeros((10, 8, 9), np.uint8), None, "square"),
    (np.zeros((10, 8, 8, 2), np.uint8), None, "C in (1, 3)"),
    (np.zeros((4, 8, 8), np.uint8), None, "at least 8"),
    (np.zeros((10, 8, 8), np.uint8), np.zeros(9, np.int64), "vector of 10"),
    (np.zeros((10, 8, 8), np.uint8), np.zeros(10, np.float32), "integers"),
])
def test_rules(x: np.ndarray, y: np.ndarray | None, msg: str) -> None:
    with pytest.raises(DatasetError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        validate_arrays(x, y)


def test_same_verdicts_as_the_library() -> None:
    fine_data = pytest.importorskip("fine.data")
    cases = [np.zeros((10, 8, 8), np.float32), np.zeros((10, 8, 9), np.uint8), np.zeros((4, 8, 8), np.uint8),
             np.zeros((10, 8, 8), np.uint8)]
    for x in cases:
        ours = theirs = None
        try:
            validate_arrays(x, None)
        except DatasetError as e:
            ours = str(e)
        try:
            fine_data.validate_arrays({"images": x}, "n")
        except fine_data.DataError as e:
            theirs = str(e)
        assert (ours is None) == (theirs is None)
        if ours:
            assert ours in theirs


def test_not_an_npz(tmp_path: Path) -> None:
    p = tmp_path / "bad.npz"
    p.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not an .npz file"):
        validate_npz(p)


def test_class_filters() -> None:
    assert parse_name("fashion-mnist:5-9") == ("fashion-mnist", [5, 6, 7, 8, 9])
    assert parse_name("ds_1:0,2,4") == ("ds_1", [0, 2, 4])
    assert parse_name("digits") == ("digits", None)
    with pytest.raises(DatasetError, match="bad class filter"):
        parse_name("digits:a")
