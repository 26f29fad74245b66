"""Measuring which of several learngenes starts a descendant closest to a target dataset.

Fit (channels, image size, width) is decided without torch (learngene_store/choice.py); among
learngenes that tie on fit, the one whose source data is closest to the target should start best.
`candidate_losses` measures that directly: each learngene's descendant is assembled for the job
(its depth, width, method, seed and the target's geometry) and scored, before any training, by the
epsilon-prediction MSE on a fixed set of target images, each at every one of a few fixed timesteps
with noise from a fixed seed, so every candidate sees the same (image, t, noise) triples.

The images come from the target's *train* split (the descendant has seen none of it yet), which keeps
the test split untouched for the job's own evaluation. The null label conditions every prediction: a
new task's labels mean nothing to the ancestry yet, and the question is how well its denoiser knows
these pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from fine.data import ImageData
from fine.diffusion import Diffusion
from fine.formats import LearngeneSet
from fine.model import DiT
from fine.pipeline import build_descendant
from fine.spec import JobSpec


@torch.no_grad()
def fixed_timestep_loss(model: DiT, images: ImageData, timesteps: Sequence[int], seed: int = 0) -> float:
    """Mean epsilon MSE of `model` on every image at every timestep (null label; fixed noise per seed)."""
    diffusion = Diffusion()
    x0 = images.as_float()
    g = torch.Generator().manual_seed(seed)
    null = torch.full((len(images),), model.cfg.num_classes, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        for t in timesteps:
            noise = torch.randn(x0.shape, generator=g)
            tt = torch.full((len(images),), int(t), dtype=torch.long)
            total += float(diffusion.loss(model, x0, null, t=tt, noise=noise))
    finally:
        model.train(was_training)
    return total / len(timesteps)


def candidate_losses(learngenes: Mapping[str, LearngeneSet], spec: JobSpec, target: ImageData, *,
                     n_images: int, timesteps: Sequence[int], seed: int) -> dict[str, float]:
    """id -> held-out loss of the spec's descendant of each learngene on `n_images` of `target`
    (the service's protocol: learngene_store.choice.MEASURE_*)."""
    images = target.subset(n_images, seed=seed)
    out = {}
    for lg_id, lg in learngenes.items():
        model = build_descendant(lg.model, spec, target)
        out[lg_id] = fixed_timestep_loss(model, images, timesteps, seed=seed)
    return out
