"""Issue 15 probe: does an EMA of the fine-tuning weights keep FINE's head start?

The paper protocol (table 4) shows FINE's first full-phase eval 5-10 % above its sigma-stage loss:
the learngene is EMA weights, fine-tuning yields raw iterates at a constant rate. This trains the
paper protocol's FINE and scratch runs (same code, seed, subset, optimiser) for a short budget and
records, beside the raw weights' held-out curve, two EMAs of them started at step 0 (after the sigma
stage; scratch: at init): `ema` with a constant decay, and `ema-warm` with fine.training.Ema's decay
warm-up (what pre-training uses). A rule only counts if it is applied to every method.

    python bench/finetune_ema.py --methods fine & python bench/finetune_ema.py --methods scratch   # ~10 min
    python bench/finetune_ema.py --methods fine --size 6x128 & ...                                # ~20 min
    python bench/finetune_ema.py --report
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from descendants import EvalConfig, Run, append, curve_at, read_runs, train_run  # noqa: E402
from paper_protocol import LEARNGENE, PROFILE  # noqa: E402

from fine.data import load  # noqa: E402
from fine.diffusion import Diffusion  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.metrics import heldout_loss  # noqa: E402
from fine.training import Ema  # noqa: E402

OUT = ROOT / "bench" / "results" / "finetune_ema"
DECAY = 0.999


def probe(method: str, size: tuple[int, int], steps: int, decay: float) -> dict:
    lg = load_learngene(LEARNGENE)
    train, test = load(PROFILE.dataset, "train"), load(PROFILE.dataset, "test")
    ecfg = EvalConfig()
    run = Run(method, *size, seed=0, dataset=PROFILE.dataset, sigma_steps=PROFILE.sigma_steps if method == "fine" else 0,
              full_steps=steps, learngene=lg.id)
    emas: dict[str, Ema] = {}
    curves: dict[str, list[tuple[int, float]]] = {"ema": [], "ema-warm": []}

    def watch(step: int, model: torch.nn.Module) -> None:
        if step == 0:  # FINE: the factored model after its sigma stage; the full phase trains its dense copy
            with torch.random.fork_rng(devices=[]):  # building the dense copy must not move the run's RNG
                start = model.materialize() if model.genes is not None else model
            emas["ema"], emas["ema-warm"] = Ema(start, decay, warmup=False), Ema(start, decay)
        else:
            for e in emas.values():
                e.update(model, step - 1)
        if step % ecfg.curve_every == 0 or step == steps:
            for name, e in emas.items():
                curves[name].append((step, heldout_loss(e.model, Diffusion(), test, n=ecfg.heldout_n)))

    rec = train_run(run, lg, train, test, ecfg, watch=watch)
    raw = [(0, curve_at(rec, 0))]
    raw += [(c["step"], c["heldout"]) for c in rec["curve"] if c["phase"] == "full"]
    return {"method": method, "depth": size[0], "width": size[1], "steps": steps, "decay": decay,
            "learngene": lg.id, "raw": raw, **curves, "seconds": rec["seconds"]}


def report() -> str:
    recs = read_runs(OUT / "runs.jsonl")
    lines = ["# Does an EMA of the fine-tuning weights keep FINE's head start? (issue 15 probe)", "",
             "Command: `python bench/finetune_ema.py --methods fine` and `--methods scratch` (one core each), then "
             "`--report`. The paper protocol's runs (learngene fmnist-v2, Fashion-MNIST, 5,000-image subset, seed 0, "
             "FINE σ125 first) for a short budget; held-out MSE on the curve's 1,000 test triples of the raw weights "
             f"and of two EMAs started at full step 0: `ema` (decay {DECAY} from the first update) and `ema-warm` "
             "(fine.training.Ema: decay min(d, (1+k)/(10+k)), as pre-training uses).", ""]
    for r in recs:
        steps = [k for k, _ in r["raw"]]
        lines += [f"## {r['method']} d{r['depth']} w{r['width']}, {r['steps']:,} full steps", "",
                  "| weights | " + " | ".join(f"{k:,}" for k in steps) + " |",
                  "|---|" + "---|" * len(steps)]
        for name in ("raw", "ema", "ema-warm"):
            got = dict(r[name])
            lines.append(f"| {name} | " + " | ".join(f"{got[k]:.4f}" if k in got else "–" for k in steps) + " |")
        lines.append("")
    text = "\n".join(lines) + "\n![held-out curves](curves.png)\n"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "table.md").write_text(text)
    if recs:
        plot(recs)
    return text


def plot(recs: list[dict]) -> None:
    """One panel per size: both methods' raw and EMA curves (log scale: scratch starts at 1.0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({(r["depth"], r["width"]) for r in recs})
    fig, axes = plt.subplots(1, len(sizes), figsize=(7 * len(sizes), 4.2), squeeze=False)
    for ax, (d, w) in zip(axes[0], sizes, strict=True):
        # Method order fixes each curve's colour across panels.
        for r in sorted((r for r in recs if (r["depth"], r["width"]) == (d, w)), key=lambda r: r["method"]):
            for name, style in (("raw", "-"), ("ema", ":"), ("ema-warm", "--")):
                ax.plot(*zip(*r[name], strict=True), style, marker=".", label=f"{r['method']} {name}")
        ax.set(yscale="log", ylim=(0.036, 0.12), xlabel="full steps (FINE: after its sigma stage)",
               ylabel="held-out MSE", title=f"d{d} w{w}: raw weights and their EMAs")
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(OUT / "curves.png", dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["fine", "scratch"], choices=("fine", "scratch"))
    p.add_argument("--size", default="6x64", metavar="DxW")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    if not a.report:
        torch.set_num_threads(a.threads)
        depth, width = (int(v) for v in a.size.split("x"))
        for method in a.methods:
            rec = probe(method, (depth, width), a.steps, DECAY)
            OUT.mkdir(parents=True, exist_ok=True)
            append(OUT / "runs.jsonl", rec)
    print(report())


if __name__ == "__main__":
    main()
