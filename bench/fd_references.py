"""Reference FDs for reading a target's FD column: what images of known quality score in its classifier.

FD far above the floor stops ranking models (issue 16's colour-mnist-5k-garment: scratch@125's pixel noise
read a lower FD than samples a person sees as better). Each reference is 500 images against the target's
test set, the size table's n:

    python bench/fd_references.py colour-mnist-5k-garment colour-fashion-mnist colour-mnist-5k mnist-5k
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fine.data import load  # noqa: E402
from fine.metrics import load_feature_classifier, sample_quality  # noqa: E402

N = 500
OUT = ROOT / "bench" / "results" / "new_domain" / "fd_references.md"


def blocky(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each k x k patch replaced by its mean (a side not divisible by k keeps a narrower last patch)."""
    return F.interpolate(F.avg_pool2d(x, k, ceil_mode=True), size=x.shape[-2:], mode="nearest")


def references(x: torch.Tensor, other: torch.Tensor) -> dict[str, torch.Tensor]:
    """Image sets of known quality, in [-1, 1]; `other` is a second real subset (the floor's stand-in)."""
    g = torch.Generator().manual_seed(1)
    return {"other real test images (floor)": other,
            "real images averaged over 4x4 patches": blocky(other, 4),
            "real images averaged over 8x8 patches": blocky(other, 8),
            "each real image's mean colour, flat": x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone(),
            "Gaussian pixel noise": torch.randn(x.shape, generator=g).clamp(-1, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+")
    a = p.parse_args()
    lines = ["# Reference FDs per target classifier", "",
             f"Command: `python bench/fd_references.py {' '.join(a.datasets)}`. {N} images each against {N} of the "
             "target's test images (the size table's protocol). A model whose FD is above a reference's is, by "
             "this classifier, worse than that reference.", "",
             "| reference | " + " | ".join(a.datasets) + " |", "|---|" + "---|" * len(a.datasets)]
    cols = []
    for ds in a.datasets:
        test, clf = load(ds, "test"), load_feature_classifier(ds)
        refs = references(test.subset(N, seed=0).as_float(), test.subset(N, seed=1).as_float())
        cols.append({k: sample_quality(v, test, clf)["fd"] for k, v in refs.items()})
    lines += [f"| {k} | " + " | ".join(f"{c[k]:.1f}" for c in cols) + " |" for k in cols[0]]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
