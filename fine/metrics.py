"""Quality metrics: held-out denoising loss, and FD / KID in the features of our own classifier.

Naming: the distances are computed on the features of a small CNN trained by this project on the
dataset itself (fine/assets/), not on Inception features, so they are reported as
`fd_<dataset>` / `kid_<dataset>` (e.g. `fd_fmnist`), never as "FID"/"KID". Both are biased by
the number of samples: always report them beside the floor (real train vs real test images) at
the same n, see `floor`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

from fine.classifier import Classifier, load_classifier, read_sha256sums
from fine.data import ImageData, parse_name
from fine.diffusion import Diffusion

ASSETS = Path(__file__).parent / "assets"
SHA256SUMS = ASSETS / "SHA256SUMS"
MANIFEST = ASSETS / "classifiers.json"

# base dataset name -> (weights file in ASSETS, short name used in metric keys)
FEATURE_CLASSIFIERS: dict[str, tuple[str, str]] = {
    "fashion-mnist": ("classifier-fashion-mnist.safetensors", "fmnist"),
    "mnist-5k": ("classifier-mnist-5k.safetensors", "mnist5k"),
    "colour-fashion-mnist": ("classifier-colour-fashion-mnist.safetensors", "cfmnist"),
    "colour-mnist-5k": ("classifier-colour-mnist-5k.safetensors", "cmnist5k"),
    "colour-mnist-5k-garment": ("classifier-colour-mnist-5k-garment.safetensors", "cmnist5kg"),
}


# -- held-out denoising loss ---------------------------------------------------------------------
@torch.no_grad()
def heldout_loss(
    model: nn.Module,
    diffusion: Diffusion,
    data: ImageData,
    n: int = 1000,
    seed: int = 0,
    batch_size: int = 250,
) -> float:
    """Mean epsilon-prediction MSE on n fixed held-out images with fixed (t, noise).

    The images are a fixed subset of `data` (all of it when n >= len(data)); t and the noise are
    drawn for all n images at once from a generator seeded with `seed`, so every model evaluated
    with the same (data, n, seed) sees exactly the same (x0, t, noise) triples, whatever the
    batch size. A fixed random subset rather than the first n: some splits are sorted by class.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    data = data.subset(n, seed=0)
    n = len(data)
    x0_all = data.as_float()
    g = torch.Generator().manual_seed(seed)
    t_all = torch.randint(0, diffusion.num_timesteps, (n,), generator=g)
    noise_all = torch.randn(x0_all.shape, generator=g)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # label dropout off: the loss is that of the conditional model
    try:
        total = 0.0
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            x0 = x0_all[sl].to(device)
            loss = diffusion.loss(model, x0, data.labels[sl].to(device), t=t_all[sl].to(device), noise=noise_all[sl].to(device))
            total += float(loss) * x0.shape[0]  # batch means -> an exact mean over all n
    finally:
        model.train(was_training)
    return total / n


# -- distances between feature sets --------------------------------------------------------------
def _as_array(feats: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().numpy()
    a = np.asarray(feats, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, F) array, got shape {a.shape}")
    return a


def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, F) feature sets, in float64.

    ||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)).
    """
    a, b = _as_array(feats_a), _as_array(feats_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if min(len(a), len(b)) < 2:
        raise ValueError("need at least 2 samples in each set to estimate a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # Singular product (fewer samples than features, or dead units): regularise slightly.
        eps = 1e-6 * np.eye(cov_a.shape[0])
        covmean = scipy.linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    if np.iscomplexobj(covmean):
        # C_a C_b has a real non-negative spectrum in exact arithmetic; rounding leaves tiny
        # imaginary parts. Large ones mean something is wrong with the inputs.
        scale = max(1.0, float(np.abs(covmean.real).max()))
        if np.abs(covmean.imag).max() > 1e-3 * scale:
            raise ValueError(f"sqrtm returned a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)  # tiny negative values are rounding


def _cubic_kernel(x: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
    k = x @ y.T
    k /= d
    k += 1.0
    return k * k * k  # much faster than ** 3 on large arrays


def kernel_distance(
    feats_a: torch.Tensor | np.ndarray,
    feats_b: torch.Tensor | np.ndarray,
    num_subsets: int = 50,
    subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel (x.y / F + 1)^3, averaged over subsets.

    This is the KID recipe (Binkowski et al. 2018) applied to our classifier's features. Unbiased:
    it is ~0 (and can be slightly negative) for two samples of one distribution.
    """
    a, b = _as_array(feats_a), _as_array(feats_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("need at least 2 samples in each set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = _cubic_kernel(x, x, d), _cubic_kernel(y, y, d), _cubic_kernel(x, y, d)
        # Off-diagonal means of k_xx and k_yy: the unbiased estimator excludes i == j.
        mmd = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.mean()
        values.append(mmd)
    return float(np.mean(values))


# -- classifier features -------------------------------------------------------------------------
def metric_suffix(dataset_name: str) -> str | None:
    """Short name used in metric keys ('fashion-mnist:5-9' -> 'fmnist'); None if no classifier."""
    base, _ = parse_name(dataset_name)
    entry = FEATURE_CLASSIFIERS.get(base)
    return entry[1] if entry else None


def named(result: dict[str, float], dataset_name: str) -> dict[str, float]:
    """{'fd': .., 'kid': ..} -> {'fd_fmnist': .., 'kid_fmnist': ..} (other keys kept as they are)."""
    suffix = metric_suffix(dataset_name)
    if suffix is None:
        raise ValueError(f"no feature classifier for dataset {dataset_name!r}")
    return {(f"{k}_{suffix}" if k in ("fd", "kid") else k): v for k, v in result.items()}


def load_feature_classifier(dataset_name: str, assets: str | Path = ASSETS) -> Classifier | None:
    """The committed classifier for a dataset (class filters ignored), sha256-checked; else None."""
    base, _ = parse_name(dataset_name)
    entry = FEATURE_CLASSIFIERS.get(base)
    if entry is None:
        return None
    assets = Path(assets)
    sums = read_sha256sums(assets / "SHA256SUMS")
    if entry[0] not in sums:
        raise ValueError(f"{entry[0]} has no entry in {assets / 'SHA256SUMS'}")
    return load_classifier(assets / entry[0], sha256=sums[entry[0]])


def _to_float_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 in [0, 255] or float in [-1, 1] -> float in [-1, 1]."""
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 or float, got {x.dtype}")
    return x.float().clamp(-1, 1)


@torch.no_grad()
def classifier_features(classifier: Classifier, images: torch.Tensor | np.ndarray, batch_size: int = 500) -> np.ndarray:
    """(N, F) float64 features of uint8 or [-1, 1] float images, in eval mode."""
    x = _to_float_images(images)
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    try:
        out = [classifier.features(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    finally:
        classifier.train(was_training)
    return torch.cat(out).double().numpy()


def sample_quality(
    generated: torch.Tensor | np.ndarray,
    real: ImageData,
    classifier: Classifier,
    n_real: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """FD and KID between generated images and real ones, in the classifier's features.

    Uses a fixed random subset of `real` of n_real images (default: as many as were generated)
    so that the value is comparable with `floor(..., n)` at the same n.
    """
    n_gen = len(generated)
    ref = real.subset(n_real or n_gen, seed=seed)
    fa = classifier_features(classifier, generated)
    fb = classifier_features(classifier, ref.images)
    return {"fd": frechet_distance(fa, fb), "kid": kernel_distance(fa, fb, seed=seed)}


def floor(train: ImageData, test: ImageData, classifier: Classifier, n: int, seed: int = 0) -> dict[str, float]:
    """FD and KID between n real train and n real test images: the best a generator can hope for."""
    n = min(n, len(train), len(test))
    fa = classifier_features(classifier, train.subset(n, seed=seed).images)
    fb = classifier_features(classifier, test.subset(n, seed=seed + 1).images)
    return {"fd": frechet_distance(fa, fb), "kid": kernel_distance(fa, fb, seed=seed), "n": n}


def recorded_floor(dataset_name: str, n: int) -> dict[str, float] | None:
    """The floor committed in classifiers.json for a base dataset at exactly n (None if absent)."""
    base, classes = parse_name(dataset_name)
    if classes is not None or not MANIFEST.exists():
        return None  # a class subset has its own floor: compute it with `floor`
    entry = json.loads(MANIFEST.read_text()).get(base, {})
    return entry.get("floors", {}).get(str(n))
