import numpy as np
import pytest

from fine.data import DataError, load, load_npz, parse_name


def test_builtin_datasets_and_filters() -> None:
    train, test = load("mnist-5k", "train"), load("mnist-5k", "test")
    assert len(train) == 4000 and len(test) == 1000 and train.images.shape[1:] == (1, 28, 28)
    assert set(load("digits:3-5", "test").labels.tolist()) == {3, 4, 5}
    assert parse_name("fashion-mnist:0,2,5-6") == ("fashion-mnist", [0, 2, 5, 6])


def test_fixed_split_is_stable_and_disjoint() -> None:
    a, b = load("digits", "train"), load("digits", "train")
    t = load("digits", "test")
    assert (a.images == b.images).all()
    assert len(a) + len(t) == 1797
    # Per class, 20% goes to the test split.
    assert abs(t.labels.bincount().float().mean().item() - 1797 * 0.2 / 10) < 1


def test_fashion_mnist_when_installed() -> None:
    try:
        test = load("fashion-mnist:5-9", "test")
    except DataError as e:
        pytest.skip(str(e))
    assert len(test) == 5000 and set(test.labels.tolist()) == {5, 6, 7, 8, 9}


def _write(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_user_npz_accepts_gray_and_rgb(tmp_path) -> None:
    rgb = load_npz(_write(tmp_path, images=np.zeros((20, 16, 16, 3), np.uint8), labels=np.arange(20) % 4))
    assert rgb.images.shape == (20, 3, 16, 16) and rgb.num_classes == 4
    gray = load_npz(_write(tmp_path, images=np.zeros((10, 8, 8), np.uint8)))
    assert gray.images.shape == (10, 1, 8, 8) and gray.num_classes == 1


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((20, 8, 8), np.float32)}, "must be uint8"),
        ({"pixels": np.zeros((20, 8, 8), np.uint8)}, "missing array 'images'"),
        ({"images": np.zeros((20, 8, 8, 2), np.uint8)}, "C in \\(1, 3\\)"),
        ({"images": np.zeros((20, 8, 6), np.uint8)}, "square"),
        ({"images": np.zeros((3, 8, 8), np.uint8)}, "at least 8 images"),
        ({"images": np.zeros((20, 8, 8), np.uint8), "labels": np.arange(19)}, "vector of 20"),
        ({"images": np.zeros((20, 8, 8), np.uint8), "labels": -np.ones(20, np.int64)}, "labels must be in"),
        ({"images": np.zeros((20, 8, 8), np.uint8), "labels": np.zeros(20, np.float32)}, "integers"),
    ],
)
def test_user_npz_rejections(tmp_path, arrays, message) -> None:
    with pytest.raises(DataError, match=message):
        load_npz(_write(tmp_path, **arrays))


def test_unreadable_npz(tmp_path) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(path)
    with pytest.raises(DataError, match="unknown dataset"):
        load("cifar-10")
