import json

import torch
from conftest import TOY

from fine.data import load
from fine.formats import load_learngene
from fine.model import DiT
from fine.pretrain import PretrainConfig, pretrain
from fine.training import Ema, OptimConfig, SubnetLoss
from fine.width import slice_state


def test_width_aware_loss_trains_every_width_through_shared_weights() -> None:
    model = DiT(TOY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    wl = SubnetLoss(model, [32, 64])
    x = torch.randn(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    loss, parts = wl(x, y, torch.Generator().manual_seed(0))
    assert set(parts) == {32, 64}
    loss.backward()
    # The narrow prefix gets gradient from both widths; coordinates outside it only from the full width.
    model.zero_grad()
    wl_narrow = SubnetLoss(model, [32, 64])
    sliced = slice_state(dict(model.named_parameters()), TOY, 32)

    def narrow(*a: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(wl_narrow.subnets[32], sliced, a)

    sub_loss = wl_narrow.diffusion.loss(narrow, x, y, generator=torch.Generator().manual_seed(0))
    sub_loss.backward()
    g = model.genes["fc1"].U.grad
    assert g[: 4 * 32].abs().sum() > 0 and torch.count_nonzero(g[4 * 32 :]) == 0


def test_pretraining_resumes_where_it_stopped(tmp_path) -> None:
    train, test = load("digits", "train"), load("digits", "test")
    optim = OptimConfig(lr=2e-3, warmup=2, batch_size=16)
    pcfg = PretrainConfig(steps=3, widths=[32, 64], ckpt_every=3, eval_every=3, eval_images=32, name="toy")
    pretrain(tmp_path, TOY, train, test, pcfg, optim)
    first = load_learngene(tmp_path / "learngene")
    pcfg.steps = 5
    side = pretrain(tmp_path, TOY, train, test, pcfg, optim)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert side["steps"] == 5 and torch.load(tmp_path / "train_state.pt", weights_only=False)["step"] == 5
    second = load_learngene(tmp_path / "learngene")
    assert not torch.equal(first.model.genes["qkv"].U, second.model.genes["qkv"].U)
    assert set(log[-1]["heldout_ema"]) == {"32", "64"}


def test_constant_ema_starts_at_the_init_and_moves_by_one_minus_decay() -> None:
    """Without warm-up the EMA keeps its start: one update moves it (1 - decay) of the way; Ema's warm-up moves it further."""
    start, moved = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    const, warm = Ema(start, 0.9, warmup=False), Ema(start, 0.9)
    const.update(moved, 0)
    warm.update(moved, 0)
    want = start.weight + 0.1 * (moved.weight - start.weight)
    assert torch.allclose(const.model.weight, want)
    assert not torch.allclose(warm.model.weight, want)
