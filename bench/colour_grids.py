"""Sample grids of the colour datasets: one row per class, the first images of each class.

    OMP_NUM_THREADS=1 python bench/colour_grids.py --out bench/results/colour_data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fine.colour import COLOUR_DATASETS, load_colour  # noqa: E402
from fine.images import save_grid  # noqa: E402


def class_grid(images: torch.Tensor, labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """(classes * per_class, C, H, W): the first `per_class` images of each class, class by class."""
    rows = [images[torch.nonzero(labels == c).flatten()[:per_class]] for c in range(int(labels.max()) + 1)]
    return torch.cat(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench/results/colour_data"))
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--split", default="train", choices=["train", "test"])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for name in COLOUR_DATASETS:
        data = load_colour(name, args.split)
        grid = class_grid(data.images, data.labels, args.per_class)
        scale = 8 if data.image_size <= 8 else 3
        path = save_grid(grid, args.out / f"{name}-{args.split}.png", rows=10, scale=scale)
        print(f"{name}: {len(data)} {args.split} images {tuple(data.images.shape[1:])} -> {path}")


if __name__ == "__main__":
    main()
