"""The ancestry recipe of issue 15: sigma that starts equal and learns, depth-aware sub-networks, schedules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import TOY

from fine.assembly import assemble
from fine.data import load
from fine.diffusion import Diffusion
from fine.formats import load_learngene
from fine.metrics import heldout_loss
from fine.model import DiT
from fine.pretrain import PretrainConfig, pretrain
from fine.sigma_stats import adjacent_correlation, linear_r2, sigma_report, sigma_stack, sign_flips
from fine.training import OptimConfig, SubnetLoss, fit

ANC = TOY.replace(depth=4)


def test_equal_sigma_start_is_the_same_in_every_layer_at_the_xavier_scale() -> None:
    model = DiT(ANC)
    model.initialize_weights(torch.Generator().manual_seed(0), sigma_init="equal")
    s = sigma_stack(model, "fc1")
    assert (s > 0).all()
    assert (s.std(0) / s.mean(0)).max() < 0.05  # 1 % noise across layers
    random = DiT(ANC)
    random.initialize_weights(torch.Generator().manual_seed(0), sigma_init="random")
    # Same Frobenius scale of W as the random start (which matches a Xavier matrix).
    rms_equal, rms_random = s.pow(2).mean().sqrt(), sigma_stack(random, "fc1").pow(2).mean().sqrt()
    assert abs(rms_equal / rms_random - 1) < 0.2
    with pytest.raises(ValueError, match="sigma_init"):
        model.initialize_weights(sigma_init="orthogonal")


def test_sigma_statistics_tell_a_smooth_trajectory_from_random_codes() -> None:
    g = torch.Generator().manual_seed(0)
    depth = torch.linspace(1, 2, 8)[:, None]
    smooth = 1 + depth * torch.randn(1, 32, generator=g) + 0.01 * torch.randn(8, 32, generator=g)
    noise = torch.randn(8, 32, generator=g)
    assert adjacent_correlation(smooth) > 0.9 and linear_r2(smooth) > 0.9 and sign_flips(smooth) < 0.1
    assert abs(adjacent_correlation(noise)) < 0.3 and linear_r2(noise) < 0.3 and sign_flips(noise) > 0.3


def test_cosine_schedule_warms_up_then_decays_to_its_floor() -> None:
    o = OptimConfig(lr=1.0, warmup=10, schedule="cosine", final_lr_frac=0.1)
    assert o.factor(0, 100) == pytest.approx(0.1)
    assert o.factor(9, 100) == pytest.approx(1.0)
    assert o.factor(99, 100) == pytest.approx(0.1)
    mid = o.factor(10 + 89 // 2, 100)
    assert 0.5 < mid < 0.6
    assert OptimConfig(warmup=10).factor(99, 100) == 1.0  # constant stays constant
    with pytest.raises(ValueError, match="schedule"):
        OptimConfig(schedule="step")


def test_fit_applies_each_groups_lr_scale() -> None:
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr_scale": 10.0}], lr=1e-2, weight_decay=0.0)
    fit([a, b], lambda _s: (a.sum() + b.sum()), 1, OptimConfig(lr=1e-2, warmup=1, grad_clip=0.0), optimizer=opt)
    # Adam's first step moves each entry by about its rate.
    assert (1 - a.detach()).mean().item() == pytest.approx(1e-2, rel=1e-3)
    assert (1 - b.detach()).mean().item() == pytest.approx(1e-1, rel=1e-3)


def test_depth_aware_subnet_is_the_descendant_assembly_builds() -> None:
    torch.manual_seed(0)
    model = DiT(ANC)
    model.initialize_weights(torch.Generator().manual_seed(0), sigma_init="equal")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()  # no label dropout: both losses see the same labels
    loss_fn = SubnetLoss(model, [], depths=[2], depths_per_step=1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss, parts = loss_fn(x, y, torch.Generator().manual_seed(3))
    assert set(parts) == {64, "d2w64"}
    g = torch.Generator().manual_seed(3)
    full = Diffusion().loss(model, x, y, generator=g)
    sub = Diffusion().loss(assemble(model, 2, 64, "fine").eval(), x, y, generator=g)
    assert parts[64] == pytest.approx(full.item(), rel=1e-5)
    assert parts["d2w64"] == pytest.approx(sub.item(), rel=1e-4)
    loss.backward()
    # The shallower sub-network's gradient reaches every layer's sigma through the interpolation.
    assert all(lin.sigma.grad is not None and lin.sigma.grad.abs().sum() > 0 for b in model.blocks
               for lin in b.linears().values() if lin is not b.adaLN)


def _short_run(tmp: Path, sigma_init: str, depths: list[int], sigma_lr_scale: float) -> Path:
    pretrain(tmp, ANC, load("digits", "train"), load("digits", "test"),
             PretrainConfig(steps=80, sigma_init=sigma_init, depths=depths, sigma_lr_scale=sigma_lr_scale,
                            ckpt_every=80, eval_every=80, eval_images=64, name="toy"),
             OptimConfig(lr=3e-3, warmup=5, batch_size=32, schedule="cosine"))
    return tmp / "learngene"


@pytest.fixture(scope="module")
def recipe_learngene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _short_run(tmp_path_factory.mktemp("recipe"), "equal", [1, 2, 3], 10.0)  # the chosen recipe


def test_sigma_of_the_new_recipe_learns_and_neighbouring_layers_agree(recipe_learngene: Path) -> None:
    model = load_learngene(recipe_learngene).model
    start = DiT(ANC)
    start.initialize_weights(torch.Generator().manual_seed(0), sigma_init="equal")
    stats = sigma_report(model, start)
    for kind in ("qkv", "proj", "fc1", "fc2"):
        assert stats[kind]["moved"] > 0.05, (kind, stats[kind])  # moved by a measurable fraction of its scale
        assert stats[kind]["adjacent_corr"] > 0.5, (kind, stats[kind])  # a random start per layer: about 0
        assert stats[kind]["sign_flips"] < 0.05, (kind, stats[kind])
    assert stats["adaLN"]["rms"] > 0  # adaLN's sigma left its zero start


def test_interpolated_descendant_at_an_unseen_depth_beats_random_sigma(recipe_learngene: Path) -> None:
    ancestry = load_learngene(recipe_learngene).model
    test = load("digits", "test")
    depth = 6  # deeper than the ancestry (4) and than any depth it trained (1-3)
    interp = assemble(ancestry, depth, 64, "fine")
    random = assemble(ancestry, depth, 64, "fine")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lin in (lin for b in random.blocks for lin in b.linears().values()):
            lin.sigma.copy_(torch.randn(lin.sigma.shape, generator=g) * lin.sigma.std())
    a, b = (heldout_loss(m, Diffusion(), test, n=200) for m in (interp, random))
    assert math.isfinite(a) and a < b, (a, b)


def test_pretraining_pauses_at_its_deadline_and_resumes(tmp_path: Path) -> None:
    train, test = load("digits", "train"), load("digits", "test")
    pcfg = PretrainConfig(steps=6, sigma_init="equal", depths=[1], ckpt_every=100, eval_every=100, eval_images=32)
    optim = OptimConfig(lr=2e-3, warmup=2, batch_size=16, schedule="cosine")
    pretrain(tmp_path, ANC, train, test, pcfg, optim, deadline=0.0)  # already late: one step, saved, stop
    assert torch.load(tmp_path / "train_state.pt", weights_only=False)["step"] == 1
    side = pretrain(tmp_path, ANC, train, test, pcfg, optim)
    assert side["steps"] == 6 and side["recipe"]["depths"] == [1] and side["recipe"]["sigma_init"] == "equal"


def test_a_tleg_ancestry_keeps_sigma_and_biases_linear_in_depth(tmp_path: Path) -> None:
    pretrain(tmp_path, ANC, load("digits", "train"), load("digits", "test"),
             PretrainConfig(steps=6, layer_form="linear", depths=[], ckpt_every=6, eval_every=6, eval_images=32),
             OptimConfig(lr=3e-3, warmup=2, batch_size=16))
    ancestry = load_learngene(tmp_path / "learngene").model
    for kind in ("qkv", "fc2", "adaLN"):
        assert linear_r2(sigma_stack(ancestry, kind)) > 1 - 1e-6, kind
    bias = torch.stack([b.mlp.fc1.bias.detach().double() for b in ancestry.blocks])
    assert linear_r2(bias) > 1 - 1e-6
    assert bias.std(0).max() > 0  # linear, not constant: the layers still differ
    # TLEG's assembly (the least-squares line) at the ancestry's own depth is then the ancestry itself.
    tleg = assemble(ancestry, ANC.depth, 64, "linear-fit")
    for k, v in ancestry.state_dict().items():
        torch.testing.assert_close(tleg.state_dict()[k], v, atol=1e-5, rtol=1e-5)
