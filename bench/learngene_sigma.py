"""Issue 15, item 5: the sigma statistics and PCA trajectories of stored learngenes, side by side.

    python bench/learngene_sigma.py learngenes/default/learngene.safetensors NEW.safetensors

The start each learngene trained from is rebuilt from its seed and recipe (initialisation draws
only from the seeded generator), so `moved` is exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sigma_plots import plot_trajectories  # noqa: E402

from fine.config import WEIGHT_TYPES  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.model import DiT  # noqa: E402
from fine.sigma_stats import pca_trajectory, sigma_report, sigma_stack  # noqa: E402

OUT = ROOT / "bench" / "results" / "learngene_sigma"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("learngenes", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    lines = ["# σ statistics of stored learngenes", "",
             f"Command: `python bench/learngene_sigma.py {' '.join(str(x) for x in a.learngenes)}`", "",
             "Per weight type: mean Pearson correlation of neighbouring layers' σ over the r entries, share of σ's",
             "variance across layers explained by a line over depth, share of entries that flip sign between",
             "neighbouring layers, std, and `moved` = RMS(σ − σ_start) / RMS(σ_start) (adaLN starts at 0: n/a).", "",
             "| learngene | steps | recipe | type | adj. corr | linear R² | sign flips | std | moved |",
             "|---|---|---|---|---|---|---|---|---|"]
    trajectories = {}
    for path in a.learngenes:
        lg = load_learngene(path)
        recipe = lg.meta.get("recipe") or {"sigma_init": "random"}
        if isinstance(recipe, str):
            recipe = json.loads(recipe)
        start = DiT(lg.cfg)
        start.initialize_weights(torch.Generator().manual_seed(int(lg.meta.get("seed", 0))),
                                 sigma_init=recipe.get("sigma_init", "random"))
        stats = sigma_report(lg.model, start)
        shown = ", ".join(f"{k} {v}" for k, v in recipe.items())
        for kind in WEIGHT_TYPES:
            s = stats[kind]
            lines.append(f"| {lg.id} | {lg.meta.get('steps')} | {shown} | {kind} | {s['adjacent_corr']:.2f} | "
                         f"{s['linear_r2']:.2f} | {s['sign_flips']:.2f} | {s['std']:.3f} | "
                         + (f"{s['moved']:.3f}" if s["moved"] == s["moved"] else "n/a") + " |")
        trajectories[lg.id] = {k: pca_trajectory(sigma_stack(lg.model, k)).tolist() for k in WEIGHT_TYPES}
    (a.out / "table.md").write_text("\n".join(lines) + "\n")
    plot_trajectories(trajectories, a.out / "pca.png")
    print(f"wrote {a.out / 'table.md'} and {a.out / 'pca.png'}")


if __name__ == "__main__":
    main()
