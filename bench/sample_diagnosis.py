"""MNIST-5k at depth 6 after 500 steps: where in t each init's loss sits, and what guidance does to FD.

    python bench/sample_diagnosis.py            # ~26 min on one core -> bench/results/sample_diagnosis/

Retrains the new-task table's depth-6 runs (FINE sigma 300 + 500, TLEG 500, scratch 500; seed 0,
the same settings; without the table's FD point at step 0, which before a fix drew from the training's
random numbers, so the inits differ from the table's by those draws) and measures what the table does not:
- held-out MSE by timestep bucket, for the true label and for the null label that classifier-free
  guidance subtracts (a transferred null row still describes the ancestry's data);
- FD at guidance 1.0 (no guidance), 1.5 (the table's) and 3.0, and a sample grid per guidance.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from descendants import EvalConfig, Run, measure, save_grid, train_run  # noqa: E402

from fine.data import ImageData, load  # noqa: E402
from fine.diffusion import Diffusion  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.spec import DEFAULT_LEARNGENE  # noqa: E402

OUT = ROOT / "bench" / "results" / "sample_diagnosis"
BUCKETS = 10


@torch.no_grad()
def mse_by_t(model, test: ImageData, null: bool, n: int = 2000, seed: int = 0) -> list[float]:
    """Held-out eps-MSE in BUCKETS equal timestep ranges (fixed images, t and noise for every model)."""
    diffusion = Diffusion()
    data = test.subset(n, seed=0)
    x0 = data.as_float()
    y = torch.full_like(data.labels, model.cfg.num_classes) if null else data.labels
    g = torch.Generator().manual_seed(seed)
    width = diffusion.num_timesteps // BUCKETS
    model.eval()
    out = []
    for b in range(BUCKETS):
        t = b * width + torch.randint(0, width, (len(data),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        out.append(sum(float(diffusion.loss(model, x0[i:i + 500], y[i:i + 500], t=t[i:i + 500], noise=noise[i:i + 500]))
                       * len(x0[i:i + 500]) for i in range(0, len(x0), 500)) / len(x0))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 3.0])
    p.add_argument("--sigma-steps", type=int, default=300)
    p.add_argument("--full-steps", type=int, default=500)
    p.add_argument("--fd-n", type=int, default=500, help="samples per FD (the table: 500)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--from-json", action="store_true", help="only rewrite table.md and the PNG from results.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    if a.from_json:
        results = json.loads((out / "results.json").read_text())
    else:
        lg = load_learngene(ROOT / DEFAULT_LEARNGENE)
        train, test = load("mnist-5k", "train"), load("mnist-5k", "test")
        ecfg = EvalConfig(fd_n=a.fd_n)
        common = {"depth": 6, "width": 128, "dataset": "mnist-5k", "full_steps": a.full_steps}
        runs = [Run("fine", sigma_steps=a.sigma_steps, learngene=lg.id, **common),
                Run("linear-fit", sigma_steps=0, learngene=lg.id, **common),
                Run("scratch", sigma_steps=0, **common)]
        results = [diagnose(run, lg, train, test, ecfg, a.guidance, out) for run in runs]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "mse_by_t.png", a.full_steps)
    write_table(results, a.guidance, out / "table.md", a.full_steps, a.fd_n)


def diagnose(run: Run, lg, train: ImageData, test: ImageData, ecfg: EvalConfig, guidance: list[float], out: Path) -> dict:
    """Train one run as the table does, then measure its loss by timestep and FD (+ a grid) per guidance scale."""
    kept: list = []
    rec = train_run(run, lg, train, test, ecfg, keep=kept.append)
    model = kept[0]
    row = {"method": run.method, "heldout": rec["heldout"],
           "mse_by_t_label": mse_by_t(model, test, null=False), "mse_by_t_null": mse_by_t(model, test, null=True)}
    for w in guidance:
        row[f"fd_g{w}"] = measure(model, test, run.dataset, replace(ecfg, cfg_scale=w), run.seed)["fd_mnist5k"]
        save_grid(model, out / f"{run.method}_g{w}.png", test, replace(ecfg, cfg_scale=w), run.seed)
    print(json.dumps(row), flush=True)
    return row


def plot(results: list[dict], path: Path, steps: int) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    centres = [(b + 0.5) * Diffusion().num_timesteps / BUCKETS for b in range(BUCKETS)]
    for i, r in enumerate(results):
        colour = f"C{i}"
        ax.plot(centres, r["mse_by_t_label"], "-o", color=colour, label=f"{r['method']} (label)")
        ax.plot(centres, r["mse_by_t_null"], "--", color=colour, label=f"{r['method']} (null label)")
    ax.set_yscale("log")
    ax.set_xlabel("timestep t")
    ax.set_ylabel("held-out eps MSE")
    ax.set_title(f"MNIST-5k, depth 6 width 128, after {steps} full steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_table(results: list[dict], guidance: list[float], path: Path, steps: int, fd_n: int) -> None:
    width = Diffusion().num_timesteps // BUCKETS
    edges = [f"{b * width}-{(b + 1) * width - 1}" for b in range(BUCKETS)]
    lines = [f"# MNIST-5k depth 6 after {steps} full steps: loss by timestep and FD by guidance", "",
             f"Command: `python bench/sample_diagnosis.py` (seed 0; new-task table settings; FD on {fd_n} samples, DDIM 25).",
             "", "| method | held-out MSE | " + " | ".join(f"FD g={w}" for w in guidance) + " |",
             "| --- | --- | " + " | ".join("---" for _ in guidance) + " |"]
    lines += [f"| {r['method']} | {r['heldout']:.4f} | " + " | ".join(f"{r[f'fd_g{w}']:.1f}" for w in guidance) + " |"
              for r in results]
    lines += ["", "Held-out eps MSE by timestep (true label / null label):", "",
              "| t | " + " | ".join(r["method"] for r in results) + " |", "| --- |" + " --- |" * len(results)]
    lines += [f"| {e} | " + " | ".join(f"{r['mse_by_t_label'][b]:.4f} / {r['mse_by_t_null'][b]:.4f}" for r in results) + " |"
              for b, e in enumerate(edges)]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
