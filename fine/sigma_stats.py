"""Is the layer-specific knowledge of an ancestry real? Statistics of its per-layer sigma over depth.

For each weight type t, sigma_t is an (L, r) matrix (one row per layer). A learned sigma varies
smoothly with depth (neighbouring rows correlate, a line over depth explains much of the
variance, few entries flip sign between neighbours); a sigma that never left a random start
per layer does none of this, and interpolating it over depth mixes unrelated codes.
"""

from __future__ import annotations

import torch

from fine.config import WEIGHT_TYPES
from fine.model import DiT


def sigma_stack(model: DiT, kind: str) -> torch.Tensor:
    """(L, r) sigma of one weight type, layer by layer."""
    return torch.stack([b.linears()[kind].sigma.detach().double() for b in model.blocks])


def adjacent_correlation(s: torch.Tensor) -> float:
    """Mean Pearson correlation, over the r entries, between neighbouring layers' sigma."""
    if s.shape[0] < 2:
        return float("nan")
    c = s - s.mean(1, keepdim=True)
    num = (c[:-1] * c[1:]).sum(1)
    den = c[:-1].norm(dim=1) * c[1:].norm(dim=1)
    return float((num / den.clamp_min(1e-12)).mean())


def linear_r2(s: torch.Tensor) -> float:
    """Share of sigma's variance across layers (pooled over entries) that a line over depth explains."""
    n = s.shape[0]
    if n < 3:
        return float("nan")
    x = torch.arange(n, dtype=torch.float64)
    xc = (x - x.mean())[:, None]
    c = s - s.mean(0, keepdim=True)
    slope = (xc * c).sum(0) / (xc**2).sum()
    resid = c - xc * slope[None]
    total = (c**2).sum()
    return float(1 - (resid**2).sum() / total.clamp_min(1e-30))


def sign_flips(s: torch.Tensor) -> float:
    """Fraction of entries whose sign differs from the same entry in the next layer."""
    if s.shape[0] < 2:
        return float("nan")
    return float((torch.sign(s[:-1]) != torch.sign(s[1:])).double().mean())


def sigma_report(model: DiT, start: DiT | None = None) -> dict[str, dict[str, float]]:
    """Per weight type: adjacent correlation, linear R^2, sign flips, std, RMS, and (given the model at
    its initialisation) how far sigma moved, as RMS change over RMS start."""
    out = {}
    for kind in WEIGHT_TYPES:
        s = sigma_stack(model, kind)
        row = {"adjacent_corr": adjacent_correlation(s), "linear_r2": linear_r2(s), "sign_flips": sign_flips(s),
               "std": float(s.std()), "rms": float(s.pow(2).mean().sqrt())}
        if start is not None:
            s0 = sigma_stack(start, kind)
            scale = float(s0.pow(2).mean().sqrt())  # adaLN's sigma starts at 0 (adaLN-Zero): no scale to compare with
            row["moved"] = float((s - s0).pow(2).mean().sqrt()) / scale if scale > 0 else float("nan")
        out[kind] = row
    return out


def pca_trajectory(s: torch.Tensor, k: int = 2) -> torch.Tensor:
    """(L, k) coordinates of each layer's sigma on the first k principal components across layers."""
    c = s - s.mean(0, keepdim=True)
    _, _, vt = torch.linalg.svd(c, full_matrices=False)
    return c @ vt[:k].T
