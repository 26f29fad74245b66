"""Loss curves of one or more pre-training runs (train_log.jsonl) as a PNG.

    python bench/plot_pretrain.py runs/ancestry-fmnist-d8w128 [more runs] --out learngenes/default/loss_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]


def smooth(values: list[float], k: int = 50) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for run in a.runs:
        log = read_log(run)
        # parts: one loss per prefix width ("128") and, depth-aware, the step's drawn sub-network ("d4w64")
        widths = sorted({int(w) for r in log for w in r.get("parts", {}) if w.isdigit()})
        for w in widths:
            steps = [r["step"] for r in log if str(w) in r["parts"]]
            vals = [r["parts"][str(w)] for r in log if str(w) in r["parts"]]
            ax1.plot(steps, smooth(vals), label=f"{run.name} w{w}", lw=1)
        evals = [r for r in log if "heldout_ema" in r]
        for w in sorted({int(k) for r in evals for k in r["heldout_ema"] if k.isdigit()}):
            ax2.plot([r["step"] for r in evals], [r["heldout_ema"][str(w)] for r in evals], marker="o", ms=3,
                     label=f"{run.name} w{w}")
        for d in sorted({int(k[1:]) for r in evals for k in r["heldout_ema"] if k.startswith("d")}):
            got = [r for r in evals if f"d{d}" in r["heldout_ema"]]  # assembled at depth d, full width, no sigma stage
            ax2.plot([r["step"] for r in got], [r["heldout_ema"][f"d{d}"] for r in got], ls="--", lw=1,
                     label=f"{run.name} depth {d} (assembled)")
    ax1.set(title="training loss (moving average of 50 steps)", xlabel="step", ylabel="noise MSE", yscale="log")
    ax2.set(title="held-out loss, EMA weights: prefix widths, assembled depths", xlabel="step", ylabel="noise MSE", yscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
