"""Build a tiny learngene set with the `fine` library (seconds on a CPU), for the tests.

    python -m api_tests.toy_learngene OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def build(out_dir: Path, steps: int = 4) -> Path:
    import torch

    from fine.config import DiTConfig
    from fine.data import load
    from fine.pretrain import PretrainConfig, pretrain
    from fine.training import OptimConfig

    torch.set_num_threads(1)
    cfg = DiTConfig(image_size=8, in_channels=1, patch_size=4, depth=2, hidden_size=64, head_dim=32,
                    num_classes=10, rank=4)
    train, test = load("digits", "train"), load("digits", "test")
    pcfg = PretrainConfig(steps=steps, widths=[32], ckpt_every=steps, eval_every=steps, eval_images=16,
                          name="toy-digits")
    pretrain(out_dir, cfg, train, test, pcfg, OptimConfig(lr=1e-3, warmup=1, batch_size=16))
    return out_dir / "learngene" / "learngene.safetensors"


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
