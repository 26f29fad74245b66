"""Issue 15/17: tune the sigma stage for a learngene, and measure instant descendants (no sigma stage).

For each size and each sigma-stage setting (rate, schedule, steps) one descendant is assembled with
the service's pipeline (fine.pipeline via bench/descendants.train_run) and its held-out loss is
recorded right after assembly (step 0 = the instant descendant) and every `--every` sigma steps.
One JSON line per run in `<out>/runs.jsonl`; a run already there is skipped.

    python bench/sigma_tune.py --learngene learngenes/fmnist-v2/learngene --tag step4500
    python bench/sigma_tune.py --report

Held-out = diffusion MSE on 1,000 fixed Fashion-MNIST test triples (the size table's curve protocol).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from descendants import EvalConfig, Run, append, read_runs, train_run  # noqa: E402

from fine.data import load  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.pipeline import stage_optim  # noqa: E402
from fine.spec import SIGMA_OPTIM  # noqa: E402

OUT = ROOT / "bench" / "results" / "sigma_tune"
SIZES = ("2x128", "6x128", "12x128", "6x64", "6x96")


def _key(rec: dict) -> tuple:
    return (rec["tag"], rec["depth"], rec["width"], rec["lr"], rec["schedule"], rec["sigma_steps"], rec["subset"])


def run_all(a: argparse.Namespace) -> None:
    lg = load_learngene(a.learngene)
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    done = {_key(r) for r in read_runs(a.out / "runs.jsonl")}
    for size in a.sizes:
        depth, width = (int(v) for v in size.split("x"))
        for lr in a.rates:
            for schedule in a.schedules:
                rec_key = (a.tag, depth, width, lr, schedule, a.steps, a.subset)
                if rec_key in done:
                    continue
                ecfg = EvalConfig(subset=a.subset, curve_every=a.every)
                run = Run("fine", depth, width, seed=a.seed, sigma_steps=a.steps, full_steps=0, learngene=lg.id)
                optim = replace(stage_optim(SIGMA_OPTIM, ecfg.batch_size), lr=lr, schedule=schedule)
                rec = train_run(run, lg, train, test, ecfg, sigma_optim=optim)
                rec |= {"tag": a.tag, "lr": lr, "schedule": schedule, "subset": a.subset,
                        "learngene_path": str(a.learngene)}
                a.out.mkdir(parents=True, exist_ok=True)
                append(a.out / "runs.jsonl", rec)
                curve = " ".join(f"{c['step']}:{c['heldout']:.4f}" for c in rec["curve"])
                print(f"d{depth} w{width} lr {lr:g} {schedule}: {curve} ({rec['seconds']:.0f} s)", flush=True)


def _at(rec: dict, step: int) -> float | None:
    return next((c["heldout"] for c in rec["curve"] if c["step"] == step), None)


def report(out: Path, tolerance: float = 0.01) -> None:
    recs = read_runs(out / "runs.jsonl")
    if not recs:
        print(f"no runs in {out / 'runs.jsonl'}")
        return
    steps = sorted({c["step"] for r in recs for c in r["curve"]})
    lines = ["# Sigma stage: rate, schedule and steps; instant descendants", "",
             "Command: `python bench/sigma_tune.py --learngene DIR --tag TAG [--sizes DxW ...] [--rates ...]"
             " [--schedules ...] [--steps N]`, then `--report`. Each row: one descendant (seed 0, batch 64,"
             " warm-up 20 steps, the target's 5,000-image subset unless the row says otherwise) assembled by the"
             " service's pipeline; held-out MSE on 1,000 fixed test triples at each sigma step shown"
             " (0 = right after assembly: the instant descendant). `instant / best` = how much worse the instant"
             " descendant is than the row's best point; `seconds` = wall time of the run, on a machine shared with other work"
             " (not a speed figure).", "",
             "| learngene | size | lr | schedule | subset | " + " | ".join(str(s) for s in steps)
             + " | best (step) | instant / best | seconds |",
             "|---|---|---|---|---|" + "---|" * len(steps) + "---|---|---|"]
    for r in sorted(recs, key=lambda r: (r["tag"], r["depth"] != 6, r["width"], r["depth"], r["lr"], r["schedule"])):
        vals = [_at(r, s) for s in steps]
        best = min((c["heldout"], c["step"]) for c in r["curve"])
        inst = _at(r, 0)
        lines.append(f"| {r['tag']} | d{r['depth']} w{r['width']} | {r['lr']:g} | {r['schedule']} | {r['subset']} | "
                     + " | ".join("-" if v is None else f"{v:.4f}" for v in vals)
                     + f" | {best[0]:.4f} ({best[1]}) | {inst / best[0]:.3f} | {r['seconds']:.0f} |")
    lines += ["", *choice_lines(recs, tolerance)]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def fewest_steps(recs: list[dict], tolerance: float) -> tuple[int, int] | None:
    """(fewest sigma steps whose held-out is within `tolerance` of the runs' last point at every size, that
    last step); None unless every run has the same measured steps."""
    grids = {tuple(c["step"] for c in r["curve"]) for r in recs}
    if len(grids) != 1:
        return None
    (grid,) = grids
    last = grid[-1]
    for step in grid:
        if all(_at(r, step) <= (1 + tolerance) * _at(r, last) for r in recs):
            return step, last
    return last, last  # unreachable: the last step always qualifies


def choice_lines(recs: list[dict], tolerance: float) -> list[str]:
    """Per setting (learngene, rate, schedule, subset) measured at every size of the table: the fewest sigma
    steps that hold the setting's own longest-run quality to `tolerance` at every size."""
    sizes = {(r["depth"], r["width"]) for r in recs}
    settings: dict[tuple, list[dict]] = {}
    for r in recs:
        settings.setdefault((r["tag"], r["lr"], r["schedule"], r["subset"]), []).append(r)
    lines = [f"## Fewest sigma steps within {100 * tolerance:g} % of the longest run, at every size "
             f"({len(sizes)} sizes)", "", "| learngene | lr | schedule | subset | steps | of | worst ratio at that step |",
             "|---|---|---|---|---|---|---|"]
    for (tag, lr, schedule, subset), group in sorted(settings.items()):
        if {(r["depth"], r["width"]) for r in group} != sizes:
            continue  # not measured at every size: no claim
        found = fewest_steps(group, tolerance)
        if found is None:
            continue
        step, last = found
        worst = max(_at(r, step) / _at(r, last) for r in group)
        lines.append(f"| {tag} | {lr:g} | {schedule} | {subset} | {step} | {last} | {worst:.3f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--learngene", type=Path, help="a learngene directory or .safetensors file")
    p.add_argument("--tag", default="", help="names the learngene (and its step) in the table")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), metavar="DxW")
    p.add_argument("--rates", nargs="+", type=float, default=[1e-3, SIGMA_OPTIM.lr])
    p.add_argument("--schedules", nargs="+", default=["constant"], help="constant | cosine (decay to 0)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="the step choice: fewest steps within this fraction of the longest run at every size")
    p.add_argument("--report", action="store_true", help="only write table.md")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if not a.report:
        if a.learngene is None or not a.tag:
            p.error("--learngene and --tag are needed to run (or --report)")
        run_all(a)
    report(a.out, a.tolerance)


if __name__ == "__main__":
    main()
