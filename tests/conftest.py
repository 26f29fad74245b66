"""Shared fixtures: a toy learngene set pre-trained for a few steps on sklearn digits (8x8)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from fine.config import DiTConfig  # noqa: E402
from fine.data import load  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.pretrain import PretrainConfig, pretrain  # noqa: E402
from fine.training import OptimConfig  # noqa: E402

TOY = DiTConfig(image_size=8, in_channels=1, patch_size=2, depth=3, hidden_size=64, head_dim=32, rank=32)


@pytest.fixture(scope="session")
def toy_learngene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("toy-ancestry")
    pretrain(out, TOY, load("digits", "train"), load("digits", "test"),
             PretrainConfig(steps=20, widths=[32, 64], ckpt_every=20, eval_every=20, eval_images=64, name="toy"),
             OptimConfig(lr=2e-3, warmup=5, batch_size=32))
    return out / "learngene"


@pytest.fixture()
def toy_learngene(toy_learngene_dir: Path):
    return load_learngene(toy_learngene_dir / "learngene.safetensors")


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every parameter, so zero-initialised parts (adaLN-Zero, final layer) are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def batch(cfg: DiTConfig, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    y = torch.randint(0, cfg.num_classes + 1, (n,), generator=g)
    return x, t, y
