"""Issue 15: short probes that choose the ancestry's recipe (how sigma starts and learns, depth-aware).

Each probe pre-trains a small ancestry with one recipe, then reports its sigma statistics
(fine.sigma_stats) and the held-out loss of descendants at several depths right after assembly
(sigma stage 0) and after a short sigma stage. One JSON line per probe in `<out>/runs.jsonl`;
a probe already there is skipped.

    python bench/recipe_probe.py --name equal --sigma-init equal
    python bench/recipe_probe.py --name equal-depth --sigma-init equal --depths 1-5
    python bench/recipe_probe.py --report      # table.md + pca.png from runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sigma_plots import plot_trajectories  # noqa: E402

from fine.assembly import assemble  # noqa: E402
from fine.config import WEIGHT_TYPES, DiTConfig  # noqa: E402
from fine.data import load  # noqa: E402
from fine.diffusion import Diffusion  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.metrics import heldout_loss  # noqa: E402
from fine.model import DiT  # noqa: E402
from fine.pretrain import PretrainConfig, pretrain  # noqa: E402
from fine.sigma_stats import pca_trajectory, sigma_report, sigma_stack  # noqa: E402
from fine.training import OptimConfig, sigma_stage  # noqa: E402

OUT = ROOT / "bench" / "results" / "recipe_probe"
EVAL_DEPTHS = (1, 2, 4, 6, 12)


def parse_depths(text: str) -> list[int]:
    """'1-5' or '1,2,4' -> a list of depths ('' -> none)."""
    if not text:
        return []
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def probe(a: argparse.Namespace) -> dict:
    cfg = DiTConfig(depth=a.depth, hidden_size=a.width, rank=a.rank)
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    pcfg = PretrainConfig(steps=a.steps, sigma_init=a.sigma_init, sigma_lr_scale=a.sigma_lr_scale,
                          depths=parse_depths(a.depths), depths_per_step=a.depths_per_step, seed=a.seed,
                          ckpt_every=a.steps, eval_every=a.steps, eval_images=500, name=a.name)
    optim = OptimConfig(lr=a.lr, warmup=a.warmup, batch_size=64, schedule="cosine")
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(tmp, cfg, train, test, pcfg, optim)
        ancestry = load_learngene(Path(tmp) / "learngene").model
    pre_s = time.time() - t0
    start = DiT(cfg)
    start.initialize_weights(torch.Generator().manual_seed(a.seed), sigma_init=a.sigma_init)
    subset = train.subset(5000, seed=0)
    diffusion = Diffusion()
    rows = {}
    for depth in EVAL_DEPTHS:
        model = assemble(ancestry, depth, a.width, "fine")
        row = {"sigma0": heldout_loss(model, diffusion, test, n=1000)}
        sigma_stage(model, subset, a.sigma_steps, optim=OptimConfig(lr=3e-3, warmup=20, batch_size=64), seed=0)
        row[f"sigma{a.sigma_steps}"] = heldout_loss(model, diffusion, test, n=1000)
        rows[str(depth)] = row
    rec = {"name": a.name, "recipe": {"sigma_init": a.sigma_init, "sigma_lr_scale": a.sigma_lr_scale,
                                      "depths": a.depths, "depths_per_step": a.depths_per_step},
           "ancestry": {"depth": a.depth, "width": a.width, "rank": a.rank, "steps": a.steps, "lr": a.lr,
                        "seed": a.seed},
           "sigma_stats": sigma_report(ancestry, start), "descendants": rows,
           "sigma_traj": {k: pca_trajectory(sigma_stack(ancestry, k)).tolist() for k in WEIGHT_TYPES},
           "pretrain_seconds": round(pre_s, 1), "seconds": round(time.time() - t0, 1),
           "threads": torch.get_num_threads()}
    return rec


def _mean(stats: dict, key: str, kinds: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2")) -> float:
    return sum(stats[k][key] for k in kinds) / len(kinds)


def report(out: Path) -> None:
    recs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines() if line.strip()]
    steps = {k for r in recs for k in next(iter(r["descendants"].values())) if k != "sigma0"}
    sk = sorted(steps)[0]
    lines = ["# Recipe probes (issue 15)", "",
             "Each row: an ancestry pre-trained with one recipe, then descendants assembled at each depth (width = the",
             "ancestry's) and evaluated right after assembly (σ0) and after a short σ stage (lr 3e-3, 20 warm-up, batch",
             "64, subset 5,000). Held-out = diffusion MSE on 1,000 fixed Fashion-MNIST test triples. σ statistics: mean",
             "over qkv/proj/fc1/fc2 (adaLN shown apart: it starts at 0 by adaLN-Zero). `moved` = RMS change of σ over",
             "its starting RMS.", "",
             "Command: `python bench/recipe_probe.py --name NAME [recipe flags]` per row (flags in the recipe",
             "column), then `python bench/recipe_probe.py --report`.", ""]
    head = "| probe | recipe | ancestry | adj. corr | linear R² | sign flips | moved | adaLN RMS | " + " | ".join(
        f"d{d} σ0 / {sk.replace('sigma', 'σ')}" for d in EVAL_DEPTHS) + " | pre-train s |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in recs:
        st, rc, an = r["sigma_stats"], r["recipe"], r["ancestry"]
        recipe = f"σ {rc['sigma_init']}, σ lr ×{rc['sigma_lr_scale']:g}" + (
            f", depths {rc['depths']} ({rc['depths_per_step']}/step)" if rc["depths"] else "")
        cells = [f"{r['descendants'][str(d)]['sigma0']:.4f} / {r['descendants'][str(d)][sk]:.4f}" for d in EVAL_DEPTHS]
        lines.append(f"| {r['name']} | {recipe} | d{an['depth']} w{an['width']} r{an['rank']}, {an['steps']} steps, "
                     f"lr {an['lr']:g} cosine, seed {an['seed']} | {_mean(st, 'adjacent_corr'):.2f} | "
                     f"{_mean(st, 'linear_r2'):.2f} | {_mean(st, 'sign_flips'):.2f} | {_mean(st, 'moved'):.3f} | "
                     f"{st['adaLN']['rms']:.3f} | " + " | ".join(cells) + f" | {r['pretrain_seconds']:.0f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot_trajectories({r["name"]: r["sigma_traj"] for r in recs}, out / "pca.png")
    print(f"wrote {out / 'table.md'} and {out / 'pca.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name")
    p.add_argument("--sigma-init", default="equal")
    p.add_argument("--sigma-lr-scale", type=float, default=1.0)
    p.add_argument("--depths", default="", help="depth-aware: e.g. 1-5 (empty: off)")
    p.add_argument("--depths-per-step", type=int, default=1)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--sigma-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    if a.report:
        report(a.out)
        return
    if not a.name:
        p.error("--name is required for a probe")
    torch.set_num_threads(a.threads)
    runs = a.out / "runs.jsonl"
    if runs.exists() and any(json.loads(line)["name"] == a.name for line in runs.read_text().splitlines() if line.strip()):
        print(f"{a.name}: already in {runs}, skipped")
        return
    rec = probe(a)
    a.out.mkdir(parents=True, exist_ok=True)
    with open(runs, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps({k: rec[k] for k in ("name", "descendants", "seconds")}))


if __name__ == "__main__":
    main()
