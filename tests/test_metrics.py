"""Quality metrics: FD / KID on classifier features, held-out loss, the committed classifiers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from fine import data as fdata
from fine.classifier import (
    Classifier,
    file_sha256,
    load_classifier,
    random_shift,
    read_sha256sums,
    save_classifier,
    train_classifier,
)
from fine.config import DiTConfig
from fine.diffusion import Diffusion
from fine.metrics import (
    ASSETS,
    floor,
    frechet_distance,
    heldout_loss,
    kernel_distance,
    load_feature_classifier,
    metric_suffix,
    named,
    sample_quality,
)
from fine.model import DiT

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # Multi-threaded BLAS on a machine whose cores are busy is many times slower, not faster.
    with threadpool_limits(limits=1):
        yield


# -- Frechet distance ----------------------------------------------------------------------------
def test_fd_of_a_set_with_itself_is_zero() -> None:
    a = np.random.default_rng(0).normal(size=(400, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fd_grows_with_a_shift_and_equals_its_squared_norm() -> None:
    a = np.random.default_rng(1).normal(size=(400, 8))
    small, large = frechet_distance(a, a + 0.1), frechet_distance(a, a + 0.5)
    assert 0 < small < large
    # Same covariance, so FD is exactly ||mean shift||^2 = 8 * 0.5^2.
    assert large == pytest.approx(8 * 0.25, rel=1e-6)


def test_fd_matches_closed_form_for_1d_gaussians() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(1.0, 2.0, size=(5000, 1))
    b = rng.normal(-1.0, 0.5, size=(5000, 1))
    # In 1-D: (mu_a - mu_b)^2 + s_a^2 + s_b^2 - 2 s_a s_b = (mu_a - mu_b)^2 + (s_a - s_b)^2.
    by_hand = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(by_hand, rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(2.0**2 + 1.5**2, rel=0.05)  # population value


def test_fd_accepts_torch_tensors_and_checks_shapes() -> None:
    a = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a + 1) == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(a, torch.randn(100, 5))


# -- KID -----------------------------------------------------------------------------------------
def test_kid_is_about_zero_for_identical_sets_and_positive_when_shifted() -> None:
    a = np.random.default_rng(3).normal(size=(600, 16))
    same = kernel_distance(a, a, num_subsets=10, subset_size=300)
    shifted = kernel_distance(a, a + 0.5, num_subsets=10, subset_size=300)
    assert abs(same) < 0.05 * shifted
    assert shifted > 0.1


def test_kid_matches_a_hand_computed_unbiased_mmd() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(6, 3)), rng.normal(0.3, 1.0, size=(6, 3))

    def k(x: np.ndarray, y: np.ndarray) -> float:
        return (float(x @ y) / 3 + 1) ** 3

    m = 6
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    # Subsets as large as the sets are permutations of them, which leave the MMD unchanged.
    assert kernel_distance(a, b, num_subsets=3, subset_size=m) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_is_unbiased_for_two_samples_of_one_distribution() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(500, 8)), rng.normal(size=(500, 8))
    values = [kernel_distance(a, b, num_subsets=5, subset_size=200, seed=s) for s in range(4)]
    assert abs(np.mean(values)) < 0.02


# -- held-out loss -------------------------------------------------------------------------------
def _tiny_dit() -> DiT:
    torch.manual_seed(0)
    return DiT(DiTConfig(image_size=8, patch_size=2, depth=1, hidden_size=32, head_dim=16, freq_dim=32))


@pytest.fixture(scope="module")
def digits_test() -> fdata.ImageData:
    return fdata.load("digits", "test")


def test_heldout_loss_is_deterministic_and_mode_preserving(digits_test: fdata.ImageData) -> None:
    model, diffusion = _tiny_dit(), Diffusion()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # Perturb every weight: a fresh adaLN-Zero DiT outputs zero and ignores its label, so
        # neither the (t, noise) draws nor a leaked label dropout would show.
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    model.train()
    a = heldout_loss(model, diffusion, digits_test, n=96, seed=0, batch_size=32)
    b = heldout_loss(model, diffusion, digits_test, n=96, seed=0, batch_size=32)
    assert a == b  # label dropout would make this random if train mode leaked in
    assert model.training
    # The (t, noise) triples do not depend on batching, only on the seed.
    assert heldout_loss(model, diffusion, digits_test, n=96, seed=0, batch_size=96) == pytest.approx(a, rel=1e-5)
    assert heldout_loss(model, diffusion, digits_test, n=96, seed=1, batch_size=32) != a
    model.eval()
    heldout_loss(model, diffusion, digits_test, n=8)
    assert not model.training


def test_heldout_loss_separates_a_zero_model_from_a_trained_one(digits_test: fdata.ImageData) -> None:
    diffusion = Diffusion()
    zero = _tiny_dit()  # adaLN-Zero: predicts exactly zero noise, so its loss is E[noise^2] ~ 1
    zero_loss = heldout_loss(zero, diffusion, digits_test, n=128)
    assert zero_loss == pytest.approx(1.0, abs=0.05)

    trained = _tiny_dit()
    opt = torch.optim.Adam(trained.parameters(), lr=3e-3)
    stream = fdata.batches(fdata.load("digits", "train"), 64, seed=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        x, y = next(stream)
        loss = diffusion.loss(trained, x, y, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained_loss = heldout_loss(trained, diffusion, digits_test, n=128)
    assert trained_loss < zero_loss - 0.2


# -- classifier ----------------------------------------------------------------------------------
def test_classifier_shapes_for_small_and_rgb_images() -> None:
    for c, size in ((1, 8), (3, 12), (1, 28)):
        model = Classifier(in_channels=c, image_size=size, num_classes=4).eval()
        x = torch.rand(5, c, size, size) * 2 - 1
        assert model.features(x).shape == (5, model.feature_dim)
        assert model.logits(x).shape == (5, 4)
    with pytest.raises(ValueError, match="expects images of shape"):
        model.features(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError):
        Classifier(image_size=6)


def test_random_shift_keeps_shape_and_zero_shift_is_identity() -> None:
    x = torch.randn(6, 3, 10, 10)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_shift(x, 0, g), x)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape and not torch.equal(y, x)


def test_train_save_load_roundtrip(tmp_path: Path) -> None:
    train = fdata.load("digits", "train")
    model = train_classifier(train, steps=30, seed=0, batch_size=64)
    path = tmp_path / "c.safetensors"
    sha = save_classifier(model, path)
    assert sha == file_sha256(path)
    loaded = load_classifier(path, sha256=sha)
    x = train.head(16).as_float()
    with torch.no_grad():
        assert torch.equal(loaded.features(x), model.features(x))
    # Standardised on the training images: roughly zero mean, unit spread per unit.
    with torch.no_grad():
        f = model.features(train.as_float())
    assert f.mean(0).abs().max() < 0.1 and (f.std(0) - 1).abs().max() < 0.1
    with pytest.raises(ValueError, match="no expected sha256"):
        load_classifier(path)  # no SHA256SUMS beside it: refuse to load unchecked


def test_committed_classifiers_load_with_matching_sha256() -> None:
    sums = read_sha256sums(ASSETS / "SHA256SUMS")
    for name in ("fashion-mnist", "mnist-5k:0-4"):
        model = load_feature_classifier(name)
        assert isinstance(model, Classifier) and not model.training
        assert model.image_size == 28 and model.in_channels == 1
    for fname in ("classifier-fashion-mnist.safetensors", "classifier-mnist-5k.safetensors"):
        assert file_sha256(ASSETS / fname) == sums[fname]
    assert load_feature_classifier("digits") is None
    assert metric_suffix("fashion-mnist:5-9") == "fmnist" and metric_suffix("digits") is None
    assert named({"fd": 1.0, "kid": 2.0}, "fashion-mnist:5-9") == {"fd_fmnist": 1.0, "kid_fmnist": 2.0}


def test_corrupted_classifier_is_refused(tmp_path: Path) -> None:
    fname = "classifier-fashion-mnist.safetensors"
    copy = tmp_path / fname
    shutil.copy(ASSETS / fname, copy)
    shutil.copy(ASSETS / "SHA256SUMS", tmp_path / "SHA256SUMS")
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one weight
    copy.write_bytes(bytes(raw))
    expected = read_sha256sums(ASSETS / "SHA256SUMS")[fname]
    with pytest.raises(ValueError, match="sha256 mismatch") as err:
        load_classifier(copy, sha256=expected)
    msg = str(err.value)
    assert str(copy) in msg and expected in msg and file_sha256(copy) in msg
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_feature_classifier("fashion-mnist", assets=tmp_path)  # the SHA256SUMS route too


@pytest.mark.skipif(not (fdata.FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists(), reason="no Fashion-MNIST")
def test_fashion_classifier_is_accurate_and_fd_separates_noise_from_real() -> None:
    model = load_feature_classifier("fashion-mnist")
    assert model is not None
    test = fdata.load("fashion-mnist", "test")
    part = test.head(1000)
    with torch.no_grad():
        acc = (model.logits(part.as_float()).argmax(1) == part.labels).float().mean().item()
    assert acc > 0.85
    train = fdata.load("fashion-mnist", "train")
    base = floor(train, test, model, n=300)
    noise = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bad = sample_quality(noise, test, model)
    assert bad["fd"] > 10 * base["fd"] and bad["kid"] > base["kid"] + 1
    # uint8 and [-1, 1] float inputs are the same images.
    real = sample_quality(train.subset(300, seed=5).images, test, model)
    real_f = sample_quality(train.subset(300, seed=5).as_float(), test, model)
    assert real["fd"] == pytest.approx(real_f["fd"], rel=1e-6)
    assert real["fd"] < 3 * base["fd"]
