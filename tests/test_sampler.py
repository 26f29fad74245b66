"""DPM-Solver++ (2M) against the exact probability-flow ODE of a Gaussian, and the sampler API."""

import pytest
import torch
from conftest import randomize_

from fine.config import DiTConfig
from fine.diffusion import DPM_SPACING, DPM_SPACINGS, SAMPLERS, Diffusion
from fine.model import DiT

MU, S = 0.3, 0.1  # data distribution N(MU, S^2) per pixel


class GaussianOracle(torch.nn.Module):
    """The exact epsilon-predictor E[eps | x_t] for N(MU, S^2) data (labels ignored)."""

    def __init__(self, diffusion: Diffusion) -> None:
        super().__init__()
        self.abar = diffusion.alphas_cumprod
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # so sample() can find a device
        self.cfg = DiTConfig(image_size=4, patch_size=2, depth=1, hidden_size=32, head_dim=32, num_classes=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)


def exact(diffusion: Diffusion, n: int, seed: int, clean: bool) -> torch.Tensor:
    """Where the probability-flow ODE takes the start noise of sample(..., seed), at t = 0 or at clean data.

    Along the ODE x_t = alpha_t MU + sqrt(alpha_t^2 S^2 + sigma_t^2) z with z constant.
    """
    a_T = diffusion.alphas_cumprod[-1].item()
    a_0 = 1.0 if clean else diffusion.alphas_cumprod[0].item()
    x_T = torch.randn((n, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    z = (x_T - a_T**0.5 * MU) / (a_T * S**2 + 1 - a_T) ** 0.5
    return a_0**0.5 * MU + (a_0 * S**2 + 1 - a_0) ** 0.5 * z


def error(sampler: str, steps: int, spacing: str = DPM_SPACING, seed: int = 0) -> float:
    """RMS distance to the exact answer: DPM-Solver++ ends at t = 0, DDIM at its clean x0 prediction."""
    d = Diffusion()
    model, y = GaussianOracle(d), torch.zeros(64, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    if sampler == "ddim":
        out = d.sample(model, y, (1, 4, 4), steps=steps, generator=g)
    else:  # the start noise sample() draws
        out = d.dpmpp_2m(model, torch.randn((64, 1, 4, 4), generator=g), y, d.dpm_timesteps(steps, spacing))
    return (out - exact(d, 64, seed, clean=sampler == "ddim")).pow(2).mean().sqrt().item()


# How much closer than DDIM each grid must land. This Gaussian (S = 0.1) bends its ODE sharply near
# t = 0, where the time-uniform grid takes one long step: log-SNR is far more accurate here.
FACTORS = {"logsnr": 0.1, "quadratic": 0.2, "time": 0.6}


@pytest.mark.parametrize("spacing", DPM_SPACINGS)
@pytest.mark.parametrize("steps", [10, 15, 20])
def test_dpmpp_is_closer_to_the_exact_ode_solution_than_ddim(steps: int, spacing: str) -> None:
    dpm, ddim = error("dpm++2m", steps, spacing), error("ddim", steps)
    assert dpm < FACTORS[spacing] * ddim, (dpm, ddim)


def test_dpmpp_converges_to_the_exact_answer() -> None:
    e5, e20, e100 = (error("dpm++2m", n, "logsnr") for n in (5, 20, 100))
    assert e5 > e20 > e100 and e100 < 5e-4, (e5, e20, e100)


def test_sample_runs_dpmpp_on_the_default_grid_from_its_start_noise() -> None:
    d = Diffusion()
    model, y = GaussianOracle(d), torch.zeros(8, dtype=torch.long)
    got = d.sample(model, y, (1, 4, 4), steps=12, sampler="dpm++2m", generator=torch.Generator().manual_seed(5))
    x = torch.randn((8, 1, 4, 4), generator=torch.Generator().manual_seed(5))
    assert torch.equal(got, d.dpmpp_2m(model, x, y, d.dpm_timesteps(12, DPM_SPACING)))


def test_dpmpp_is_deterministic_shaped_and_guided() -> None:
    model = randomize_(DiT(DiTConfig(image_size=8, patch_size=2, depth=1, hidden_size=32, head_dim=32)), scale=0.2)
    d = Diffusion()
    y = torch.tensor([0, 1, 2])

    def run(seed: int, cfg: float = 1.0) -> torch.Tensor:
        return d.sample(model, y, (1, 8, 8), steps=6, sampler="dpm++2m", cfg_scale=cfg,
                        generator=torch.Generator().manual_seed(seed))

    a, b, c, e = run(0), run(0), run(1), run(0, cfg=3.0)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, e)
    assert a.shape == (3, 1, 8, 8) and a.abs().max() <= 1.0
    assert model.training  # restored


def test_dpmpp_reports_progress_once_per_model_call() -> None:
    d = Diffusion()
    seen: list[tuple[int, int]] = []
    d.sample(GaussianOracle(d), torch.zeros(2, dtype=torch.long), (1, 4, 4), steps=7, sampler="dpm++2m",
             progress=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 7) for i in range(1, 8)]


@pytest.mark.parametrize("spacing", DPM_SPACINGS)
@pytest.mark.parametrize("steps", [1, 10, 20, 999])
def test_dpm_timesteps_are_strictly_decreasing_from_the_last_to_zero(spacing: str, steps: int) -> None:
    ts = Diffusion().dpm_timesteps(steps, spacing)
    assert len(ts) == steps + 1 and ts[0] == 999 and ts[-1] == 0
    assert all(b < a for a, b in zip(ts, ts[1:], strict=False))


def test_logsnr_spacing_is_uniform_in_log_snr() -> None:
    d = Diffusion()
    lam = d.log_snr()[d.dpm_timesteps(20, "logsnr")]
    gaps = lam.diff()
    assert (gaps > 0).all() and gaps.max() / gaps.min() < 1.5  # integer timesteps: close, not exact


def test_bad_arguments_say_what_is_allowed() -> None:
    d = Diffusion()
    model = GaussianOracle(d)
    with pytest.raises(ValueError, match="unknown sampler 'euler'.*'ddim', 'ddpm', 'dpm\\+\\+2m'"):
        d.sample(model, torch.zeros(1, dtype=torch.long), (1, 4, 4), sampler="euler")
    with pytest.raises(ValueError, match="unknown spacing 'cosine'"):
        d.dpm_timesteps(10, "cosine")
    with pytest.raises(ValueError, match="do not fit"):
        d.dpm_timesteps(1000)
    assert SAMPLERS == ("ddim", "ddpm", "dpm++2m")


def test_sampling_precision_rules_and_bf16_stays_close_to_fp32() -> None:
    from fine.pipeline import resolve_precision, sampling

    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="fp32, bf16, auto"):
        resolve_precision("fp16")
    torch.manual_seed(0)
    model = randomize_(DiT(DiTConfig(image_size=8, patch_size=2, depth=2, hidden_size=64, num_classes=3)), scale=0.2).eval()
    x, t, y = torch.randn(4, 1, 8, 8), torch.full((4,), 500), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        ref = model(x, t, y)
        with sampling("bf16"):
            low = model(x, t, y).float()
        with sampling("fp32"):
            same = model(x, t, y)
    assert torch.equal(same, ref)
    rel = ((low - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.05, rel  # bf16 changes the answer a little (so autocast did act), not a lot
