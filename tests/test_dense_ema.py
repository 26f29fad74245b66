"""The dense phase's EMA rule (fine.spec.FINETUNE_OPTIM): what it returns and that it leaves training alone."""

from dataclasses import replace

import pytest
import torch

from fine.data import load
from fine.pipeline import Hooks, build_descendant, dense_optim, train_descendant
from fine.spec import FINETUNE_OPTIM, JobSpec
from fine.training import Ema


def _spec(method: str) -> JobSpec:
    return JobSpec(depth=2, hidden_size=32, dataset="digits", method=method, sigma_steps=3 if method == "fine" else 0,
                   subset_size=128, finetune_steps=6, batch_size=16)


def test_the_service_rule_keeps_an_ema() -> None:
    assert 0 < FINETUNE_OPTIM.ema < 1 and dense_optim(16).ema == FINETUNE_OPTIM.ema


@pytest.mark.parametrize("method", ["fine", "scratch"])
def test_the_dense_phase_returns_the_ema_of_the_raw_trajectory(toy_learngene, method) -> None:
    """An EMA run returns exactly what averaging a raw run's weights after every step gives, and on_step sees it."""
    data = load("digits", "train").subset(128, seed=0)
    spec = _spec(method)
    by_hand: list[Ema] = []

    def start(m) -> None:
        with torch.random.fork_rng(devices=[]):  # building a dense model draws its (overwritten) init
            by_hand.append(Ema(m.materialize() if method == "fine" else m, FINETUNE_OPTIM.ema))

    def average(phase: str, step: int, m) -> None:
        if phase == "finetune":
            by_hand[0].update(m, step)

    seen: list[dict] = []

    def look(phase: str, _step: int, m) -> None:
        if phase == "finetune":
            seen.append({k: v.clone() for k, v in m.state_dict().items()})

    torch.manual_seed(0)
    raw = train_descendant(build_descendant(toy_learngene.model, spec), data, spec,
                           finetune_optim=replace(dense_optim(16), ema=0.0), hooks=Hooks(after_sigma=start, on_step=average))
    torch.manual_seed(0)
    averaged = train_descendant(build_descendant(toy_learngene.model, spec), data, spec, hooks=Hooks(on_step=look))
    want, got = by_hand[0].model.state_dict(), averaged.state_dict()
    assert want.keys() == got.keys() and len(seen) == spec.finetune_steps
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(seen[-1][k], want[k], rtol=1e-5, atol=1e-6, msg=f"on_step: {k}")
    moved = [k for k, v in raw.state_dict().items() if not torch.allclose(v, got[k], atol=1e-6)]
    assert moved, "the EMA came back equal to the raw weights"
