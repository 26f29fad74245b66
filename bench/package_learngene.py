"""Copy a pre-training run's learngene set into the repo with its log, loss curve and samples.

    python bench/package_learngene.py runs/ancestry-fmnist-d8w128 --dest learngenes/default
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fine.assembly import assemble  # noqa: E402
from fine.data import parse_name  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.pipeline import sample_grid  # noqa: E402
from fine.spec import DEFAULT_LEARNGENE  # noqa: E402

PRETRAIN_COMMAND = (
    "fine pretrain --out runs/ancestry-fmnist-d8w128 --depth 8 --hidden-size 128 --rank 128 "
    "--steps 6000 --widths all --threads 1"
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run", type=Path)
    p.add_argument("--dest", type=Path, default=(ROOT / DEFAULT_LEARNGENE).parent)
    p.add_argument("--command", default=PRETRAIN_COMMAND)
    a = p.parse_args()
    torch.set_num_threads(1)
    a.dest.mkdir(parents=True, exist_ok=True)
    for name in ("learngene.safetensors", "config.json"):
        shutil.copy2(a.run / "learngene" / name, a.dest / name)
    shutil.copy2(a.run / "train_log.jsonl", a.dest / "train_log.jsonl")
    lg = load_learngene(a.dest / "learngene.safetensors")
    subprocess.run([sys.executable, str(ROOT / "bench" / "plot_pretrain.py"), str(a.run), "--out",
                    str(a.dest / "loss_curve.png")], check=True)
    widths = lg.meta.get("widths", [lg.cfg.hidden_size])
    for w in widths:
        model = assemble(lg.model, lg.cfg.depth, w, "fine").eval()
        seen = parse_name(str(lg.meta.get("source_dataset", "")))[1]  # only the classes it was trained on
        sample_grid(model, a.dest / f"samples_w{w}.png", per_class=10, steps=50, cfg_scale=2.0, classes=seen)
    evals = [json.loads(line) for line in (a.dest / "train_log.jsonl").read_text().splitlines() if "heldout_ema" in line]
    last = evals[-1]["heldout_ema"] if evals else {}
    (a.dest / "README.md").write_text(
        f"# Learngene set `{lg.id}` (`learngenes/{a.dest.name}`)\n\n"
        f"- sha256 `{lg.sha256}` ({(a.dest / 'learngene.safetensors').stat().st_size} bytes)\n"
        f"- ancestry: depth {lg.cfg.depth}, width {lg.cfg.hidden_size}, head size {lg.cfg.head_dim}, "
        f"rank {lg.cfg.rank}, patch {lg.cfg.patch_size}, {lg.cfg.image_size}x{lg.cfg.image_size}x{lg.cfg.in_channels}\n"
        f"- trained on `{lg.meta.get('source_dataset')}` for {lg.meta.get('steps')} steps at batch "
        f"{lg.meta.get('batch_size')}, lr {lg.meta.get('lr')}, EMA {lg.meta.get('ema_decay')} (the EMA weights are stored)\n"
        + (f"- width-aware: every step trains the prefix widths {widths} (sandwich rule)\n" if len(widths) > 1
           else "- plain: trained at its full width only\n")
        + "- held-out MSE of the EMA weights at the last evaluation, per width: "
        + ", ".join(f"w{k}: {v:.4f}" for k, v in last.items()) + "\n\n"
        f"Command (re-run it to resume from `train_state.pt` in the run directory):\n\n    {a.command}\n\n"
        "Files: `train_log.jsonl` (per-step loss per width, periodic held-out loss), `loss_curve.png`, "
        "`samples_w<width>.png` (DDIM 50 steps, guidance 2.0, one row per class).\n"
    )
    print(f"packaged {lg.id} ({lg.sha256}) into {a.dest}")


if __name__ == "__main__":
    main()
