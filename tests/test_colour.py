import numpy as np
import pytest
import torch

from fine import colour
from fine.data import BUILTIN, DataError, load


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch) -> None:
    """Never write the user's cache from tests."""
    monkeypatch.setenv("FINE_CACHE_DIR", str(tmp_path / "cache"))


def _hue_spread(images: np.ndarray) -> float:
    """Mean resultant length of the per-image mean hue (1: all one hue, ~0: hues all round the wheel)."""
    rgb = images.reshape(len(images), 3, -1).mean(2)
    r, g, b = rgb.T
    angle = np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)
    return float(np.abs(np.exp(1j * angle).mean()))


def test_hash_is_fixed_and_per_key() -> None:
    keys = colour.image_keys("colour-digits", "all", np.arange(3))
    u = colour.uniform(keys, 1, 4)
    assert u.shape == (3, 4) and (u >= 0).all() and (u < 1).all()
    # Integer arithmetic only: these values are the same on every machine.
    assert u[0, 0] == pytest.approx(colour.uniform(keys[:1], 1, 1)[0, 0], abs=0)
    assert len({round(x, 12) for x in u.ravel()}) == 12
    assert not np.array_equal(colour.uniform(keys, 2, 4), u)
    other = colour.image_keys("colour-digits", "train", np.arange(3))
    assert not np.array_equal(colour.uniform(other, 1, 4), u)


def test_hsv_to_rgb() -> None:
    rgb = colour.hsv_to_rgb(np.array([0, 1 / 3, 2 / 3, 0.5]), np.array([1, 1, 1, 0]), np.array([1, 1, 1, 0.5]))
    np.testing.assert_allclose(rgb, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]], atol=1e-12)


def test_generation_is_deterministic_and_depends_on_the_index_only() -> None:
    a, la = colour.generate("colour-digits", "all")
    b, lb = colour.generate("colour-digits", "all")
    assert a.tobytes() == b.tobytes() and np.array_equal(la, lb)
    gray = colour.pad_to(np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8), 32)
    keys = colour.image_keys("colour-fashion-mnist", "train", np.arange(40))
    for style in (colour.garment_style, colour.sticker_style):
        whole = style(gray, keys)
        assert np.array_equal(style(gray[10:20], keys[10:20]), whole[10:20])


def test_tiny_set_shapes_split_and_filter() -> None:
    train, test = load("colour-digits", "train"), load("colour-digits", "test")
    assert train.images.shape[1:] == (3, 8, 8) and train.images.dtype == torch.uint8
    assert len(train) + len(test) == 1797 and train.num_classes == 10 and train.labels.dtype == torch.int64
    assert int(train.images.min()) < 30 and int(train.images.max()) > 225  # the range is used
    part = load("colour-digits:3-5", "test")
    assert set(part.labels.tolist()) == {3, 4, 5} and part.name == "colour-digits:3-5"
    keep = (test.labels >= 3) & (test.labels <= 5)
    assert (part.images == test.images[keep]).all()
    assert set(colour.COLOUR_DATASETS) <= set(BUILTIN)
    with pytest.raises(DataError, match="unknown dataset"):
        load("colour-nope", "train")


def test_colour_varies_per_image() -> None:
    images, _ = colour.generate("colour-digits", "all")
    assert _hue_spread(images) < 0.2
    corners = images[:, :, 0, 0].astype(float)
    assert corners.std(0).min() > 30  # backgrounds differ between images
    assert (images[:, :, 0, 0] != images[:, :, -1, -1]).any(1).mean() > 0.3  # many are gradients
    # A grey image has no hue spread to speak of: the check can fail.
    assert _hue_spread(np.repeat(images[:, :1], 3, axis=1) // 2 + np.array([60, 0, 0])[None, :, None, None]) > 0.9


@pytest.mark.parametrize("base", ["colour-fashion-mnist", "colour-mnist-5k", "colour-mnist-5k-garment"])
def test_32px_sets_on_a_slice(base: str) -> None:
    part = "test" if base == "colour-fashion-mnist" else "all"
    try:
        images, labels = colour.generate(base, part, limit=300)
    except DataError as e:
        pytest.skip(str(e))
    assert images.shape == (300, 3, 32, 32) and images.dtype == np.uint8 and labels.shape == (300,)
    assert _hue_spread(images) < 0.2 and images[:, :, 0, 0].astype(float).std(0).min() > 20
    # The object is still there: where the source has ink, the colour differs from the rest of the image.
    ink = colour.pad_to(colour._source(base, part)[0][:300], 32) > 128
    rgb = images.transpose(0, 2, 3, 1).astype(float)
    fg = np.stack([rgb[i][ink[i]].mean(0) for i in range(300)])
    bg = np.stack([rgb[i][~ink[i]].mean(0) for i in range(300)])
    assert (np.abs(fg - bg).sum(1) > 30).mean() > 0.8


def test_cache_round_trip(tmp_path) -> None:
    path = colour.cache_path("colour-digits", "all")
    assert str(path).startswith(str(tmp_path)) and not path.exists()
    first = load("colour-digits", "test")
    assert path.exists()
    cached, _ = colour.cached("colour-digits", "all")
    fresh, _ = colour.generate("colour-digits", "all")
    assert cached.tobytes() == fresh.tobytes()
    assert (load("colour-digits", "test").images == first.images).all()
    path.write_bytes(b"not an npz")  # an unreadable cache file is regenerated, not trusted
    again, _ = colour.cached("colour-digits", "all")
    assert again.tobytes() == fresh.tobytes()


def test_colour_classifiers_are_committed_and_named() -> None:
    from fine.metrics import load_feature_classifier, metric_suffix, named

    for base, suffix in (("colour-fashion-mnist", "cfmnist"), ("colour-mnist-5k", "cmnist5k"),
                         ("colour-mnist-5k-garment", "cmnist5kg")):
        model = load_feature_classifier(f"{base}:0-4")  # sha256-checked against SHA256SUMS
        assert model is not None and (model.in_channels, model.image_size) == (3, 32)
        assert metric_suffix(base) == suffix
        assert named({"fd": 1.0, "kid": 2.0}, base) == {f"fd_{suffix}": 1.0, f"kid_{suffix}": 2.0}
    assert load_feature_classifier("colour-digits") is None


def test_colour_fashion_classifier_is_accurate_on_a_slice() -> None:
    from fine.metrics import load_feature_classifier

    try:
        images, labels = colour.generate("colour-fashion-mnist", "test", limit=500)
    except DataError as e:
        pytest.skip(str(e))
    model = load_feature_classifier("colour-fashion-mnist")
    with torch.no_grad():
        pred = model.logits(torch.from_numpy(images).float() / 127.5 - 1).argmax(1)
    assert (pred == torch.from_numpy(labels)).float().mean().item() > 0.8
