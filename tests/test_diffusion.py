import torch
from conftest import randomize_

from fine.config import DiTConfig
from fine.diffusion import Diffusion
from fine.model import DiT


def test_schedule_endpoints() -> None:
    d = Diffusion()
    assert d.betas[0].item() == 1e-4 and abs(d.betas[-1].item() - 0.02) < 1e-12
    assert d.alphas_cumprod[-1] < 1e-4 < d.alphas_cumprod[0]


def test_loss_of_a_perfect_noise_predictor_is_zero() -> None:
    d = Diffusion()
    x0 = torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    noise = torch.randn_like(x0)
    abar = d.alphas_cumprod[t].float().view(-1, 1, 1, 1)

    def oracle(xt, tt, y):
        return (xt - abar.sqrt() * x0) / (1 - abar).sqrt()

    assert d.loss(oracle, x0, torch.zeros(4, dtype=torch.long), t=t, noise=noise).item() < 1e-8


def test_ddim_is_deterministic_and_cfg_changes_output() -> None:
    model = randomize_(DiT(DiTConfig(image_size=8, patch_size=2, depth=1, hidden_size=32, head_dim=32)), scale=0.2)
    d = Diffusion()
    y = torch.tensor([0, 1])
    a = d.sample(model, y, (1, 8, 8), steps=5, generator=torch.Generator().manual_seed(0))
    b = d.sample(model, y, (1, 8, 8), steps=5, generator=torch.Generator().manual_seed(0))
    c = d.sample(model, y, (1, 8, 8), steps=5, cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, 1, 8, 8) and a.abs().max() <= 1.0 + 1e-6
