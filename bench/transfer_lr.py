"""Why a FINE descendant gets worse in its first full steps, and whether a smaller rate stops it.

At depth 8 and 12 (width 128) the size table's FINE descendant has a lower held-out loss after its
sigma stage than after the next 500 full steps; weight-selection at depth 8 (the ancestry's own
weights) rises the same way. The dense phase runs at lr 1e-3, the ancestry's own pre-training
rate, from a fresh AdamW state. This trains the same descendants with the same data and seeds at
other rates and records the held-out curve every 50 steps.

    python bench/transfer_lr.py                       # d8 w128, lr 1e-3 / 3e-4 / 1e-4, 500 steps
    python bench/transfer_lr.py --sizes 12x128 --report
    python bench/transfer_lr.py --rates 1e-3 --warmup 500 --steps 2000   # a long warm-up instead of a lower rate
    python bench/transfer_lr.py --rates 1e-3 --schedule cosine --steps 2000   # decay over the fine-tuning budget
    python bench/transfer_lr.py --restart        # the ancestry itself: which part of a restart hurts

`--restart` continues the ancestry's own pre-training state (`learngenes/default/train_state.pt`)
on the target subset at width 128, in three ways: the raw weights with their AdamW state (a plain
continuation), the raw weights with a fresh AdamW, and the EMA weights (= the learngene) with a
fresh AdamW (= what every descendant gets). Whichever of these rises is the cause.

The lr 1e-3 run repeats the size table's run with the same seeds and batches. Its label-dropout
draws match only for size-table runs recorded after commit 29767c3 (before it, measuring FD at
step 0 advanced the global RNG), so every row shows the size table's 250/500/2000 points next to
it: for older runs the lr 1e-3 difference is the noise of one draw of the dense phase.
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

from descendants import EvalConfig, Run, append, curve_at, longest, read_runs, train_run  # noqa: E402

from fine.data import load  # noqa: E402
from fine.diffusion import Diffusion  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.metrics import heldout_loss  # noqa: E402
from fine.model import DiT, DiTConfig  # noqa: E402
from fine.spec import DEFAULT_LEARNGENE  # noqa: E402
from fine.training import DiffusionLoss, OptimConfig, fit  # noqa: E402

LG = ROOT / DEFAULT_LEARNGENE
OUT = ROOT / "bench" / "results" / "transfer_lr"
SIZE_TABLE = ROOT / "bench" / "results" / "size_table" / "runs.jsonl"
DENSE_WARMUP = OptimConfig().warmup  # the size table's dense phase: OptimConfig's defaults (lr 1e-3, 50 warm-up steps)


def warmup_of(rec: dict) -> int:
    """Records from before `--warmup` existed all used the default warm-up."""
    return rec.get("warmup", DENSE_WARMUP)


def schedule_of(rec: dict) -> str:
    """Records from before `--schedule` existed all used a constant rate after warm-up."""
    return rec.get("schedule", "constant")


def run_all(sizes: list[tuple[int, int]], rates: list[float], methods: list[str], steps: int,
            warmup: int = DENSE_WARMUP, learngene: Path = LG, out: Path = OUT, schedule: str = "constant") -> None:
    lg = load_learngene(learngene)
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    ecfg = EvalConfig(curve_every=50)
    done = {(r["learngene"], r["method"], r["depth"], r["width"], r["lr"], warmup_of(r), schedule_of(r), r["full_steps"])
            for r in read_runs(out / "runs.jsonl")}
    for depth, width in sizes:
        for method in methods:
            for lr in rates:
                if (lg.id, method, depth, width, lr, warmup, schedule, steps) in done:
                    continue
                run = Run(method, depth, width, seed=0, full_steps=steps, learngene=lg.id)
                rec = train_run(run, lg, train, test, ecfg,
                                full_optim=OptimConfig(lr=lr, warmup=warmup, batch_size=ecfg.batch_size,
                                                       schedule=schedule))
                out.mkdir(parents=True, exist_ok=True)
                append(out / "runs.jsonl", rec | {"lr": lr, "warmup": warmup, "schedule": schedule,
                                                  "learngene_path": str(learngene)})
                print(f"{method} d{depth} w{width} lr {lr:g} warm-up {warmup} {schedule} {steps} steps: "
                      f"{rec['heldout']:.4f} ({rec['seconds']:.0f} s)", flush=True)


RESTARTS = {  # name -> (weights in train_state.pt, keep its AdamW state)
    "raw weights + their AdamW state": ("model", True),
    "raw weights, fresh AdamW": ("model", False),
    "EMA weights (the learngene), fresh AdamW": ("ema", False),
}


def restart_runs(steps: int = 200, every: int = 25, lr: float = 1e-3) -> None:
    """Continue the ancestry's pre-training state on the 5,000-image subset, three ways (see --restart)."""
    state = torch.load(LG.parent / "train_state.pt", weights_only=False, map_location="cpu")
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    subset = train.subset(5000, seed=0)
    out = []
    for name, (weights, keep_adam) in RESTARTS.items():
        torch.manual_seed(0)
        model = DiT(DiTConfig(**state["config"]))
        model.load_state_dict(state[weights])
        # A continuation keeps its rate; a fresh optimiser gets the size table's warm-up.
        optim = OptimConfig(lr=lr, warmup=1 if keep_adam else DENSE_WARMUP)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=optim.weight_decay)
        if keep_adam:
            opt.load_state_dict(state["opt"])
        curve = [(0, heldout_loss(model, Diffusion(), test, n=1000))]

        def on_step(_phase: str, step: int, _total: int, _loss: float | None, m=model, c=curve) -> None:
            if step % every == 0:
                c.append((step, heldout_loss(m, Diffusion(), test, n=1000)))

        model.train()
        fit(model.parameters(), DiffusionLoss(model, subset, optim.batch_size, seed=1), steps, optim,
            "restart", progress=on_step, optimizer=opt)
        out.append({"restart": name, "lr": lr, "curve": curve})
        print(name, " ".join(f"{k}:{v:.4f}" for k, v in curve), flush=True)
    (OUT / "restart.json").write_text(json.dumps(out, indent=1) + "\n")


def report(out: Path = OUT) -> None:
    recs = read_runs(out / "runs.jsonl")
    table = read_runs(SIZE_TABLE)
    points = (0, 50, 100, 250, 500, 1000, 2000)
    lines = ["# Transferred inits in their first full steps: held-out loss by learning rate", "",
             "Command: `python bench/transfer_lr.py [--sizes DxW ...] [--methods ...]`, then `--report`.",
             f"Fashion-MNIST, 5,000-image subset, seed 0, batch 64, a linear warm-up ({DENSE_WARMUP} steps unless",
             "the row says otherwise) then a constant rate;",
             "FINE's sigma stage as in the size table (300 steps, lr 3e-3). Step 0 = after init / sigma stage.",
             "`size table` = the same run's points in `size_table/runs.jsonl` (see the script's docstring).", "",
             "| learngene | method | size | lr | warm-up | then | " + " | ".join(f"{k}" for k in points)
             + " | best (step) | size table, lr 1e-3: 250 / 500 / 2000 |",
             "|---|---|---|---|---|---|" + "---|" * len(points) + "---|---|"]
    for r in sorted(recs, key=lambda r: (r.get("learngene", ""), r["method"], r["depth"], r["width"], r["full_steps"],
                                         -r["lr"], warmup_of(r), schedule_of(r))):
        vals = [curve_at(r, k) for k in points]
        full = [(c["heldout"], c["step"]) for c in r["curve"] if c["phase"] == "full"]
        best = min(full)
        # The size table's run of the same learngene only (another learngene's run is another descendant).
        same = longest([t for t in table if t.get("learngene") == r.get("learngene")], r["method"], (r["depth"], r["width"]))
        ref = " / ".join(f"{v:.4f}" if v is not None else "-" for v in
                         ((curve_at(same, k) if same else None) for k in (250, 500, 2000)))
        lines.append(f"| {r.get('learngene', '')} | {r['method']} | d{r['depth']} w{r['width']} | {r['lr']:g} | "
                     f"{warmup_of(r)} | {schedule_of(r)} | "
                     + " | ".join(f"{v:.4f}" if v is not None else "-" for v in vals)
                     + f" | {best[0]:.4f} ({best[1]}) | {ref} |")
    rs = json.loads((out / "restart.json").read_text()) if (out / "restart.json").exists() else []
    if rs:
        steps = [k for k, _ in rs[0]["curve"]]
        lines += ["", f"## The ancestry (depth 8, width 128) continued on the subset at lr {rs[0]['lr']:g}", "",
                  "Command: `python bench/transfer_lr.py --restart`. Held-out MSE (n = 1,000) after k steps.", "",
                  "| start | " + " | ".join(str(k) for k in steps) + " |", "|---|" + "---|" * len(steps)]
        lines += [f"| {r['restart']} | " + " | ".join(f"{v:.4f}" for _, v in r["curve"]) + " |" for r in rs]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(recs, rs, out)
    print("\n".join(lines))


def plot(recs: list[dict], restarts: list[dict], out: Path = OUT) -> None:
    """One panel per size (held-out curve per rate), and one for the restart experiment if run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({(r["depth"], r["width"]) for r in recs})
    panels = len(sizes) + bool(restarts)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
    if restarts:
        ax = axes[0][-1]
        for r in restarts:
            ax.plot(*zip(*r["curve"], strict=True), marker=".", label=r["restart"])
        ax.set(title=f"the ancestry continued, lr {restarts[0]['lr']:g}", xlabel="steps", ylabel="held-out MSE")
        ax.legend(fontsize=8)
    for ax, (d, w) in zip(axes[0], sizes, strict=False):
        for r in (r for r in recs if (r["depth"], r["width"]) == (d, w)):
            pts = [(0, curve_at(r, 0))] + [(c["step"], c["heldout"]) for c in r["curve"] if c["phase"] == "full"]
            wu = ("" if warmup_of(r) == DENSE_WARMUP else f", warm-up {warmup_of(r)}") + (
                "" if schedule_of(r) == "constant" else f", {schedule_of(r)}")
            ax.plot(*zip(*pts, strict=True), marker=".",
                    label=f"{r['method']} lr {r['lr']:g}{wu}, {r['full_steps']} steps")
        ax.set(title=f"depth {d}, width {w}", xlabel="full steps after init / sigma stage", ylabel="held-out MSE")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["8x128"], metavar="DxW")
    p.add_argument("--rates", nargs="+", type=float, default=[1e-3, 3e-4, 1e-4])
    p.add_argument("--methods", nargs="+", default=["fine"])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--warmup", type=int, default=DENSE_WARMUP, metavar="STEPS",
                   help="linear warm-up of the dense phase's rate")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="after warm-up: constant (the size table's) or cosine decay to 0 over --steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--learngene", type=Path, default=LG, help="the learngene the descendants are assembled from")
    p.add_argument("--out", type=Path, default=OUT, help="where runs.jsonl, table.md and curves.png go")
    p.add_argument("--restart", action="store_true", help="continue the ancestry's pre-training state three ways")
    p.add_argument("--report", action="store_true", help="only write table.md and curves.png")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.restart:
        OUT.mkdir(parents=True, exist_ok=True)
        restart_runs()
    elif not a.report:
        run_all([tuple(int(v) for v in s.split("x")) for s in a.sizes], a.rates, a.methods, a.steps, a.warmup,
                a.learngene, a.out, a.schedule)
    report(a.out)


if __name__ == "__main__":
    main()
