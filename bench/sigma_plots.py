"""The PCA trajectory figure of per-layer sigma (the paper's view of what sigma learned)."""

from __future__ import annotations

from pathlib import Path

from fine.config import WEIGHT_TYPES


def plot_trajectories(trajectories: dict[str, dict[str, list[list[float]]]], path: Path) -> None:
    """One row per model, one panel per weight type: sigma(l) on its first two principal components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(trajectories)
    fig, axes = plt.subplots(rows, len(WEIGHT_TYPES), figsize=(3 * len(WEIGHT_TYPES), 2.6 * rows), squeeze=False)
    for i, (name, traj) in enumerate(trajectories.items()):
        for j, kind in enumerate(WEIGHT_TYPES):
            ax = axes[i][j]
            xs, ys = [p[0] for p in traj[kind]], [p[1] for p in traj[kind]]
            ax.plot(xs, ys, "-o", ms=3)
            for layer, (px, py) in enumerate(zip(xs, ys, strict=True)):
                ax.annotate(str(layer), (px, py), fontsize=7)
            ax.set_title(f"{name}: {kind}", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.suptitle("σ(l) on its first two principal components across layers (numbers: layer index)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
