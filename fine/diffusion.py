"""DDPM noise schedule, training loss and samplers (DDPM, DDIM) with classifier-free guidance."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

NUM_TIMESTEPS = 1000


class Diffusion:
    """Linear-beta DDPM schedule (1e-4 .. 0.02 over 1000 steps), epsilon prediction."""

    def __init__(self, num_timesteps: int = NUM_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_timesteps = num_timesteps
        self.betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod.to(like.device)[t].float().view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def loss(
        self,
        model: nn.Module | Callable[..., torch.Tensor],
        x0: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error between the true and the predicted noise."""
        n = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (n,), generator=generator).to(x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return F.mse_loss(model(self.q_sample(x0, t, noise), t, y), noise)

    # -- sampling ----------------------------------------------------------------------------
    @staticmethod
    def guided_eps(
        model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float, null: int
    ) -> torch.Tensor:
        if cfg_scale == 1.0:
            return model(x, t, y)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null)]))
        cond, uncond = both.chunk(2)
        return uncond + cfg_scale * (cond - uncond)

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        y: torch.Tensor,
        shape: tuple[int, int, int],
        steps: int = 50,
        sampler: str = "ddim",
        cfg_scale: float = 1.0,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Images in [-1, 1]. `ddim` is deterministic given the start noise; `ddpm` is ancestral."""
        if sampler not in ("ddim", "ddpm"):
            raise ValueError(f"unknown sampler {sampler!r}: use 'ddim' or 'ddpm'")
        was_training = model.training
        model.eval()
        net = model
        if getattr(model, "genes", None) is not None:
            # Sigma is fixed while sampling: build each dense weight once, not once per step (-10%).
            net = model.materialize().eval()
        device = next(model.parameters()).device
        null = model.cfg.num_classes  # type: ignore[union-attr]
        x = torch.randn((y.shape[0], *shape), generator=generator).to(device)
        y = y.to(device)
        if sampler == "ddpm":
            steps = self.num_timesteps
        ts = torch.linspace(self.num_timesteps - 1, 0, steps).round().long().tolist()
        abar = self.alphas_cumprod
        for i, t in enumerate(ts):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=device)
            eps = self.guided_eps(net, x, tt, y, cfg_scale, null)
            a_t = abar[t].item()
            a_prev = abar[ts[i + 1]].item() if i + 1 < len(ts) else 1.0
            x0 = ((x - (1 - a_t) ** 0.5 * eps) / a_t**0.5).clamp(-1, 1)
            eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5  # consistent with the clamped x0
            if sampler == "ddim":
                x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
            else:
                beta_t = 1 - a_t / a_prev
                mean = (a_prev**0.5 * beta_t * x0 + (a_t / a_prev) ** 0.5 * (1 - a_prev) * x) / (1 - a_t)
                if i + 1 < len(ts):
                    var = beta_t * (1 - a_prev) / (1 - a_t)
                    mean = mean + var**0.5 * torch.randn(x.shape, generator=generator).to(device)
                x = mean
            if progress is not None:
                progress(i + 1, len(ts))
        model.train(was_training)
        return x
