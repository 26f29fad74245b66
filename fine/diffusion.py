"""DDPM noise schedule, training loss and samplers (DDPM, DDIM, DPM-Solver++ 2M) with classifier-free guidance."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fine.spec import SAMPLERS

NUM_TIMESTEPS = 1000
# Timestep grids for DPM-Solver++: uniform in t, uniform in log-SNR, or uniform in sqrt(t). Uniform in t is the
# default by measurement (bench/results/sampler/table.md: FD-FMNIST at DDIM-50's level from 10-15 steps; log-SNR,
# though closer to the exact ODE answer, came out ~10 worse than DDIM-50 at every step count).
DPM_SPACINGS: tuple[str, ...] = ("time", "logsnr", "quadratic")
DPM_SPACING = "time"


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
        """Classifier-free guided noise prediction (one batched forward pass for both branches)."""
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
        """Images in [-1, 1]. `ddim` and `dpm++2m` are deterministic given the start noise; `ddpm` is ancestral."""
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(map(repr, SAMPLERS))}")
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
        if sampler == "dpm++2m":
            x = self.dpmpp_2m(net, x, y, self.dpm_timesteps(steps), cfg_scale, null, progress)
            model.train(was_training)
            return x
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

    # -- DPM-Solver++ (2M), Lu et al. 2022 -----------------------------------------------------
    def dpm_timesteps(self, steps: int, spacing: str = DPM_SPACING) -> list[int]:
        """steps + 1 strictly decreasing integer timesteps from T-1 to 0 (one model call per interval)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if spacing not in DPM_SPACINGS:
            raise ValueError(f"unknown spacing {spacing!r}: use one of {', '.join(map(repr, DPM_SPACINGS))}")
        last = self.num_timesteps - 1
        if spacing == "time":
            ts = torch.linspace(last, 0, steps + 1).round().long()
        elif spacing == "quadratic":
            ts = (torch.linspace(math.sqrt(last), 0, steps + 1) ** 2).round().long()
        else:
            lam = self.log_snr()  # decreasing in t
            grid = torch.linspace(float(lam[last]), float(lam[0]), steps + 1, dtype=torch.float64)
            # nearest integer t on the (monotone) log-SNR curve
            ts = torch.searchsorted(-lam, -grid).clamp(0, last)
            lower = (ts - 1).clamp(min=0)
            ts = torch.where((lam[lower] - grid).abs() < (lam[ts] - grid).abs(), lower, ts)
        if steps >= self.num_timesteps:
            raise ValueError(f"{steps} steps do not fit in {self.num_timesteps} timesteps")
        out = ts.tolist()
        out[0], out[-1] = last, 0
        # Rounding may repeat a timestep: push repeats apart, up from the end, then down from the start.
        for i in range(steps - 1, 0, -1):
            out[i] = max(out[i], out[i + 1] + 1)
        for i in range(1, steps):
            out[i] = min(out[i], out[i - 1] - 1)
        return out

    def log_snr(self) -> torch.Tensor:
        """lambda_t = log(alpha_t / sigma_t) per timestep (float64, decreasing in t)."""
        a = self.alphas_cumprod
        return 0.5 * (a.log() - (1 - a).log())

    def dpmpp_2m(
        self,
        net: nn.Module | Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        ts: list[int],
        cfg_scale: float = 1.0,
        null: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Multistep second-order DPM-Solver++ (data prediction) along the timesteps `ts`, x0 clamped to [-1, 1].

        With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma), h_i = lambda_i - lambda_{i-1}:
        x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i, where D_i is the first model's x0
        on the first step and (1 + 1/(2 r)) x0_{i-1} - 1/(2 r) x0_{i-2} with r = h_{i-1} / h_i after it.
        """
        abar = self.alphas_cumprod
        lam = self.log_snr()
        prev_x0: torch.Tensor | None = None
        prev_h = 0.0
        n = len(ts) - 1
        for i in range(n):
            s, t = ts[i], ts[i + 1]
            tt = torch.full((x.shape[0],), s, dtype=torch.long, device=x.device)
            eps = self.guided_eps(net, x, tt, y, cfg_scale, null)  # type: ignore[arg-type]
            a_s, a_t = abar[s].item(), abar[t].item()
            x0 = ((x - (1 - a_s) ** 0.5 * eps) / a_s**0.5).clamp(-1, 1)
            h = (lam[t] - lam[s]).item()
            d = x0
            if prev_x0 is not None:
                r = prev_h / h
                d = (1 + 0.5 / r) * x0 - (0.5 / r) * prev_x0
            x = ((1 - a_t) / (1 - a_s)) ** 0.5 * x - a_t**0.5 * math.expm1(-h) * d
            prev_x0, prev_h = x0, h
            if progress is not None:
                progress(i + 1, n)
        return x.clamp(-1, 1)
