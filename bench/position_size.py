"""How large an image the shipped learngene's position function serves: held-out MSE by image side.

The default learngene was pre-trained on 28x28 Fashion-MNIST with patch 4 (a 7x7 grid). A descendant
on a larger square image evaluates the same 2-D sin-cos position function at interpolated positions
(fine.model.sincos_2d with base_grid 7), and its sigma stage also trains the patch embedding and the
final layer (fine.pipeline.adaptation_parts). This measures, for each side, Fashion-MNIST upsampled in
numpy (bilinear by default), the held-out MSE of a FINE descendant right after assembly and after a
short sigma stage, against scratch trained the same number of steps at the same size, so that the side
where the learngene stops helping shows.

    python bench/position_size.py                     # sides 28 32 56 84 112, depth 4, width 64, 100 steps
    python bench/position_size.py --sides 28 56 --steps 50 --resize nearest
    python bench/position_size.py --report            # table + plot from results.json only

Every run is appended to results.json as it finishes (re-running skips what is there; --fresh starts over).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fine.colour import _upsample_matrix as upsample_matrix  # noqa: E402  (the colour sets' bilinear weights)
from fine.data import ImageData, load  # noqa: E402
from fine.diffusion import Diffusion  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.metrics import heldout_loss  # noqa: E402
from fine.pipeline import Hooks, adaptation_parts, build_descendant, dense_optim, new_task, train_descendant  # noqa: E402
from fine.spec import DEFAULT_LEARNGENE, JobSpec  # noqa: E402

OUT = ROOT / "bench" / "results" / "position_size"
SIDES = (28, 32, 56, 84, 112)
DATASET = "fashion-mnist"  # the learngene's own source: only the size changes


def resize(images: np.ndarray, side: int, mode: str = "bilinear") -> np.ndarray:
    """(N, H, H) uint8 -> (N, side, side) uint8: nearest or bilinear (half-pixel centres, edges clamped)."""
    n, h, _ = images.shape
    if side == h:
        return images
    if mode == "nearest":
        idx = np.minimum((np.arange(side) * h) // side, h - 1)
        return images[:, idx][:, :, idx]
    a = upsample_matrix(h, side)
    out = np.einsum("ij,njk,lk->nil", a, images.astype(np.float64), a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def at_side(data: ImageData, side: int, mode: str) -> ImageData:
    arr = resize(data.images[:, 0].numpy(), side, mode)
    return ImageData(torch.from_numpy(arr[:, None].copy()), data.labels, data.num_classes, f"{data.name}@{side}")


def one_side(lg, train: ImageData, test: ImageData, side: int, a: argparse.Namespace) -> list[dict]:  # type: ignore[no-untyped-def]
    tr, te = at_side(train, side, a.resize), at_side(test, side, a.resize)
    rows = []
    for method in ("fine", "scratch"):
        spec = JobSpec(depth=a.depth, hidden_size=a.width, dataset=DATASET, method=method, seed=a.seed,
                       sigma_steps=a.steps if method == "fine" else 0,
                       finetune_steps=0 if method == "fine" else a.steps,
                       subset_size=a.subset, batch_size=a.batch_size)
        t0 = time.time()
        model = build_descendant(lg.model, spec, tr)
        at_init = heldout_loss(model, Diffusion(), te, n=len(te), seed=0)
        parts = adaptation_parts(lg.cfg, tr) if method == "fine" else ()
        model = train_descendant(model, tr.subset(a.subset, seed=a.seed), spec,
                                 train_labels=new_task(lg, tr, DATASET), train_parts=parts, hooks=Hooks(),
                                 # the committed table measured scratch's raw weights (before the EMA rule)
                                 finetune_optim=replace(dense_optim(a.batch_size), ema=0.0))
        after = heldout_loss(model, Diffusion(), te, n=len(te), seed=0)
        rows.append({"side": side, "grid": side // lg.cfg.patch_size, "method": method, "steps": a.steps,
                     "heldout_init": round(at_init, 5), "heldout_after": round(after, 5),
                     "trained_parts": list(parts), "seconds": round(time.time() - t0, 1)})
        print(f"side {side} {method}: init {at_init:.4f} after {a.steps} steps {after:.4f} "
              f"({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def report(doc: dict) -> str:
    a = doc["settings"]
    rows = doc["rows"]
    lines = ["# Image side vs the shipped learngene's position function", "",
             f"Command: `{doc['command']}`", "",
             f"Learngene `{doc['learngene']}` ({doc['learngene_side']}x{doc['learngene_side']}, patch "
             f"{doc['patch']}: a {doc['learngene_side'] // doc['patch']}x{doc['learngene_side'] // doc['patch']} grid). "
             f"Fashion-MNIST upsampled ({a['resize']}) to each side; descendant depth {a['depth']}, width {a['width']}, "
             f"seed {a['seed']}, batch {a['batch_size']}, training subset {a['subset']}; held-out MSE on "
             f"{a['test']} test images (fixed t and noise). FINE: assembled, then {a['steps']} sigma steps with the "
             "job defaults (lr 3e-3, biases, plus the patch embedding and final layer when the size differs); "
             f"scratch: DiT's init, then {a['steps']} full steps (lr 1e-3), the job's own scratch path.", "",
             "| side | grid | FINE at assembly | FINE after sigma stage | scratch after | FINE / scratch | "
             "parts trained with sigma | seconds (FINE + scratch) |",
             "|---|---|---|---|---|---|---|---|"]
    for side in sorted({r["side"] for r in rows}):
        f = next(r for r in rows if r["side"] == side and r["method"] == "fine")
        s = next((r for r in rows if r["side"] == side and r["method"] == "scratch"), None)
        if s is None:
            continue
        lines.append(f"| {side} | {f['grid']}x{f['grid']} | {f['heldout_init']:.4f} | {f['heldout_after']:.4f} | "
                     f"{s['heldout_after']:.4f} | {f['heldout_after'] / s['heldout_after']:.2f} | "
                     f"{', '.join(f['trained_parts']) or 'none'} | {f['seconds'] + s['seconds']:.0f} |")
    if doc.get("conclusion"):
        lines += ["", doc["conclusion"]]
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    sides = sorted({r["side"] for r in rows if r["method"] == "scratch"})

    def series(method: str, key: str) -> list[float]:
        return [next(r[key] for r in rows if r["side"] == s and r["method"] == method) for s in sides]

    steps = doc["settings"]["steps"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(sides, series("fine", "heldout_init"), "o--", label="FINE at assembly")
    ax.plot(sides, series("fine", "heldout_after"), "o-", label=f"FINE after {steps} sigma steps")
    ax.plot(sides, series("scratch", "heldout_after"), "s-", label=f"scratch after {steps} steps")
    ax.axvline(doc["learngene_side"], color="grey", lw=0.8, ls=":")
    ax.set_xticks(sides)
    ax.set_xlabel("image side (pixels; learngene trained at the dotted line)")
    ax.set_ylabel("held-out MSE")
    ax.set_yscale("log")
    ax.set_title(f"Position function vs image side (depth {doc['settings']['depth']}, width {doc['settings']['width']})")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def conclusion(doc: dict) -> str:
    """The largest side where FINE after its sigma stage still beats scratch at equal steps."""
    rows = doc["rows"]
    wins = []
    for side in sorted({r["side"] for r in rows}):
        f = next(r for r in rows if r["side"] == side and r["method"] == "fine")
        s = next((r for r in rows if r["side"] == side and r["method"] == "scratch"), None)
        if s is not None:
            wins.append((side, f["heldout_after"] < s["heldout_after"]))
    best = None
    for side, won in wins:  # the largest side up to which every measured side was a win
        if not won:
            break
        best = side
    if best is None:
        return "FINE did not beat scratch at equal steps at any side measured."
    lost = [s for s, w in wins if not w]
    tail = f"; at {', '.join(f'{s}x{s}' for s in lost)} it does not" if lost else " (every side measured)"
    return f"FINE beats scratch at equal steps up to {best}x{best}{tail}."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sides", type=int, nargs="+", default=list(SIDES))
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--subset", type=int, default=2000, help="training images (the job's subset_size)")
    p.add_argument("--test", type=int, default=200, help="held-out test images")
    p.add_argument("--resize", choices=("bilinear", "nearest"), default="bilinear")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--learngene", type=Path, default=ROOT / DEFAULT_LEARNGENE)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--fresh", action="store_true", help="discard results.json first")
    p.add_argument("--report", action="store_true", help="only rebuild table.md and the plot")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    res = a.out / "results.json"
    settings = {k: getattr(a, k) for k in ("depth", "width", "steps", "batch_size", "subset", "test", "resize", "seed")}
    doc = json.loads(res.read_text()) if res.exists() and not a.fresh else {}
    if not a.report:
        if doc.get("settings") not in (None, settings):
            sys.exit(f"{res} was made with other settings {doc['settings']}; pass --fresh or --out")
        prior = doc.get("seconds", 0)
        lg = load_learngene(a.learngene)
        cmd = "python bench/position_size.py " + " ".join(sys.argv[1:])
        doc = {"command": cmd.strip(), "learngene": lg.id, "learngene_side": lg.cfg.image_size,
               "patch": lg.cfg.patch_size, "settings": settings, "rows": doc.get("rows", [])}
        train = load(DATASET, "train").subset(a.subset, seed=a.seed)
        test = load(DATASET, "test").subset(a.test, seed=0)
        t0 = time.time()
        for side in a.sides:
            if side % lg.cfg.patch_size:
                sys.exit(f"side {side} is not a multiple of the learngene's patch size {lg.cfg.patch_size}")
            if any(r["side"] == side for r in doc["rows"]):
                continue
            doc["rows"] += one_side(lg, train, test, side, a)
            res.write_text(json.dumps(doc, indent=1) + "\n")
        doc["seconds"] = round(time.time() - t0 + prior, 1)
    doc["conclusion"] = conclusion(doc)
    res.write_text(json.dumps(doc, indent=1) + "\n")
    (a.out / "table.md").write_text(report(doc))
    plot(doc, a.out / "heldout.png")
    print(report(doc))


if __name__ == "__main__":
    main()
