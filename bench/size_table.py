"""Issue 4 size table: FINE vs scratch, weight-selection and TLEG at every depth and width.

    python bench/size_table.py --profile quick                 # < 15 min, one seed, small budgets
    nohup python bench/size_table.py --profile full --shard 0/2 > logs/size0.log &   # hours, resumable
    python bench/size_table.py --profile full --report          # table.md, table.csv, PNGs

Every method trains on the same fixed 5,000-image subset with the same optimiser settings.
FINE gets its sigma stage and then K full steps; the others get K full steps; scratch also gets
10 K. One run per (method, size, seed) records its held-out curve and the measurements at every
K, so a run is never repeated to read off a smaller budget. Runs are appended to
`<out>/runs.jsonl` and skipped when already there: interrupt, resume and shard freely.
A run longer than a session: `--stop-after MINUTES` checkpoints it to `<out>/partial/` and stops;
commit that file (`git add -f`: partial/ is ignored otherwise), and the same command on the next
machine continues the run exactly.
The new-task table uses the same machinery (`--profile new-task-fmnist59 | new-task-mnist5k`).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from claims import write_claims  # noqa: E402
from descendants import (  # noqa: E402
    Checkpointing,
    EvalConfig,
    Run,
    RunPaused,
    append,
    curve_at,
    done_keys,
    fd_floor,
    longest,
    read_runs,
    scratch_steps,
    train_run,
)

from fine.data import load  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.metrics import metric_suffix  # noqa: E402
from fine.spec import DEFAULT_LEARNGENE, SHIPPED_LEARNGENES, JobSpec  # noqa: E402

DEFAULT_LG = ROOT / DEFAULT_LEARNGENE
V1_LG = ROOT / SHIPPED_LEARNGENES["fmnist-v1"]  # what the size table and new-task tables were measured on
METHODS = ("fine", "linear-fit", "weight-selection", "scratch")
JOB_SIGMA_STEPS = JobSpec.model_fields["sigma_steps"].default  # the service's default job
COLOUR_LG = ROOT / SHIPPED_LEARNGENES["cfmnist-v1"]  # issue 16's colour ancestry
# Issue 15 item 4's 0-4 ancestry (fmnist-v2's recipe, 3,000 steps): a benchmark's, not shipped, so no job chooses it.
FMNIST04_V2_LG = ROOT / "learngenes" / "fmnist04-v2" / "learngene" / "learngene.safetensors"


@dataclass(frozen=True)
class Profile:
    out: str
    sizes: tuple[tuple[int, int], ...]  # (depth, width)
    budgets: tuple[int, ...]  # K: full steps after init (after the sigma stage for fine)
    sigma_steps: int
    scratch_factor: int = 10
    scratch_budgets: tuple[int, ...] = ()  # scratch's budgets when given (else scratch_factor x each K > 0)
    seeds: tuple[int, ...] = (0,)
    headline: tuple[tuple[int, int], ...] = ()  # sizes that get every seed; the rest get seeds[0]
    dataset: str = "fashion-mnist"
    learngene: str = str(V1_LG)  # the tables already committed name theirs; a new profile names its own
    methods: tuple[str, ...] = METHODS
    eval: EvalConfig = field(default_factory=EvalConfig)
    by_size: bool = False  # run order: size by size (each size's rows complete first) instead of cheapest first
    ema: float = 0.0  # the dense phase's EMA decay (Run.ema): 0 measures the raw weights, as the committed tables did
    scratch_fd: tuple[int, ...] = ()  # more full-step counts at which scratch runs measure FD and held-out


FULL_SIZES = ((1, 128), (2, 128), (4, 128), (6, 128), (8, 128), (12, 128), (6, 64), (6, 96))
PROFILES = {
    "full": Profile("size_table", FULL_SIZES, (0, 500, 2000), 300, seeds=(0, 1),
                    headline=((2, 128), (6, 128), (6, 64))),
    # Fewer sizes, one seed and 1/20 of the budgets, so that it finishes in < 15 minutes on one core.
    "quick": Profile("size_table_quick", ((1, 128), (2, 128), (1, 64)), (0, 100), 100,
                     eval=EvalConfig(heldout_n=500, curve_every=50, fd_n=200, fd_steps=20)),
    "new-task-fmnist59": Profile("new_task_fmnist59", ((2, 128), (6, 128)), (0, 500), 300, scratch_factor=10,
                                 dataset="fashion-mnist:5-9",
                                 learngene=str(ROOT / "learngenes" / "fmnist04" / "learngene.safetensors"), by_size=True,
                                 seeds=(0, 1), headline=((6, 128),)),
    # Depth 6 has a second seed: its FD at K = 500 moved from 163 to 100 with the training's random draws alone.
    "new-task-mnist5k": Profile("new_task_mnist5k", ((2, 128), (6, 128)), (0, 500), 300, scratch_factor=10,
                                dataset="mnist-5k", by_size=True, seeds=(0, 1), headline=((6, 128),)),
}
# Issue 16: a new domain with the default job (sigma stage only) against scratch at equal and at 10x the steps,
# at depths 2 and 6 and every offered width; each target with the learngene the service chooses for it, except
# issue 15's new classes (fmnist59), which take the ancestry that never saw them.
NEW_DOMAIN_SIZES = tuple((d, w) for d in (2, 6) for w in (64, 96, 128))
NEW_DOMAIN_TARGETS = {"cfmnist": ("colour-fashion-mnist", COLOUR_LG),  # the colour learngene's own domain
                      "cmnist5kg": ("colour-mnist-5k-garment", COLOUR_LG),  # its look, other content
                      "cmnist5k": ("colour-mnist-5k", COLOUR_LG),  # unlike it in look and content
                      "mnist5k": ("mnist-5k", DEFAULT_LG),  # grayscale: the default learngene
                      "fmnist59": ("fashion-mnist:5-9", FMNIST04_V2_LG)}  # classes 5-9 from a 0-4 ancestry
PROFILES.update({
    f"new-domain-{key}": Profile(f"new_domain/{key}", NEW_DOMAIN_SIZES, (0,), JOB_SIGMA_STEPS,
                                 scratch_budgets=(JOB_SIGMA_STEPS, 10 * JOB_SIGMA_STEPS), dataset=dataset,
                                 learngene=str(lg), methods=("fine", "scratch"), by_size=True)
    for key, (dataset, lg) in NEW_DOMAIN_TARGETS.items()})
# Issue 15 item 4's follow-up: is the new-class gap to scratch@10x the short sigma stage? FINE with 10x sigma steps.
PROFILES["new-domain-fmnist59-sigma10x"] = Profile(
    "new_domain/fmnist59_sigma10x", ((2, 128), (6, 128)), (0,), 10 * JOB_SIGMA_STEPS,
    dataset=PROFILES["new-domain-fmnist59"].dataset, learngene=PROFILES["new-domain-fmnist59"].learngene,
    methods=("fine",), by_size=True)


def planned_runs(prof: Profile, lg_id: str) -> list[Run]:
    """Every run of the profile, cheapest first (so a partial full profile has whole rows), or size by size."""
    kmax = max(prof.budgets)
    out = []
    for depth, width in prof.sizes:
        seeds = prof.seeds if (depth, width) in prof.headline else prof.seeds[:1]
        for seed in seeds:
            for method in prof.methods:
                common = {"depth": depth, "width": width, "seed": seed, "dataset": prof.dataset, "ema": prof.ema}
                if method == "scratch":
                    out += scratch_runs(prof, common)
                else:
                    out.append(Run(method, full_steps=kmax, fd_at=prof.budgets, learngene=lg_id,
                                   sigma_steps=prof.sigma_steps if method == "fine" else 0, **common))
    if prof.by_size:
        return sorted(out, key=lambda r: (r.depth * r.width, r.seed, r.full_steps + r.sigma_steps))
    # Seed 0 of every size before any second seed; within a seed, by training FLOPs (~ depth * width^2 * steps).
    return sorted(out, key=lambda r: (r.seed, r.depth * r.width**2 * (r.full_steps + r.sigma_steps)))


def scratch_runs(prof: Profile, common: dict) -> list[Run]:
    """One scratch run per budget 10 K, each measuring the points above the previous one.

    The learning rate is constant after warm-up, so a shorter run is the prefix of a longer one:
    splitting costs some repeated steps but lets the cheap points land hours before the 20,000-step run.
    (Bit for bit since `measure` stopped drawing from the global RNG; runs finished before that fix
    part from their longer twin after the first FD point, by random draws only: depth 1 agrees to
    1.6% at every later step.)
    """
    budgets = sorted(set(prof.scratch_budgets) or {prof.scratch_factor * k for k in prof.budgets if k})
    points = sorted({k for k in prof.budgets if k} | set(budgets) | set(prof.scratch_fd))
    runs, below = [], 0
    for budget in budgets:
        runs.append(Run("scratch", sigma_steps=0, full_steps=budget,
                        fd_at=tuple(p for p in points if below < p <= budget), **common))
        below = budget
    return runs


def run_name(r: dict | Run) -> str:
    r = r if isinstance(r, dict) else r.__dict__
    return f"{r['method']}_d{r['depth']}_w{r['width']}_s{r['seed']}"


# -- report --------------------------------------------------------------------------------------
def _mean_spread(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (max(values) - min(values) if len(values) > 1 else None)


def _fmt(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    m, spread = _mean_spread(values)
    return f"{m:.{digits}f}" + (f" ± {spread / 2:.{digits}f}" if spread is not None else "")


def grid_path(out: Path, r: dict | Run, steps: int) -> Path:
    """A run's sample grid after `steps` full steps (scratch has one per budget it measures)."""
    return out / "samples" / f"{run_name(r)}_n{steps}.png"


def budget_label(method: str, k: int, sigma_steps: int) -> str:
    return f"σ{sigma_steps} + {k}" if method == "fine" else f"{k}"


def point_rows(recs: list[dict], suffix: str) -> list[dict]:
    """One row per (size, method, budget) with every seed's measurements."""
    rows: dict[tuple, dict] = {}
    for r in recs:
        for k, m in r["points"].items():
            key = (r["depth"], r["width"], r["method"], int(k))
            row = rows.setdefault(key, {"depth": r["depth"], "width": r["width"], "method": r["method"], "k": int(k),
                                        "sigma_steps": r["sigma_steps"], "seeds": [], "heldout": [], "fd": [], "kid": []})
            row["seeds"].append(r["seed"])
            row["heldout"].append(m["heldout"])
            if f"fd_{suffix}" in m:
                row["fd"].append(m[f"fd_{suffix}"])
                row["kid"].append(m[f"kid_{suffix}"])
    return [rows[k] for k in sorted(rows, key=lambda k: (k[1] != 128, k[0], k[1], METHODS.index(k[2]), k[3]))]


def scratch_steps_to_match(recs: list[dict], row: dict) -> str:
    """First scratch curve step (seed 0) whose held-out loss is at or below this row's seed-0 loss."""
    size = (row["depth"], row["width"])
    scratch = longest(recs, "scratch", size)
    own = longest(recs, row["method"], size)
    if scratch is None or own is None or row["method"] == "scratch":
        return ""
    # The curve's held-out set, not the table's larger one: both sides of the comparison on the same triples.
    target = curve_at(own, row["k"])
    if target is None:
        return ""
    hit = scratch_steps(scratch, target)
    return str(hit) if hit is not None else f"> {scratch['full_steps']}"


def results_dir(prof: Profile) -> Path:
    return ROOT / "bench" / "results" / prof.out  # an absolute prof.out wins (tests)


def report(prof: Profile) -> None:
    out = results_dir(prof)
    recs = read_runs(out / "runs.jsonl")
    suffix = metric_suffix(prof.dataset) or "fd"
    floor = json.loads((out / "floor.json").read_text()) if (out / "floor.json").exists() else {}
    rows = point_rows(recs, suffix)
    lg_dir = Path(prof.learngene).parent
    lg_name = lg_dir.parent.name if lg_dir.name == "learngene" else lg_dir.name  # a run dir exports into learngene/
    lines = [f"# {prof.out}: {prof.dataset}, learngene `{lg_name}`", "",
             f"Command: `python bench/size_table.py --profile {next((k for k, v in PROFILES.items() if v == prof), '?')}` "
             f"(then `--report`). Budget K = full training steps; FINE first trains sigma (+ block biases) "
             f"for {prof.sigma_steps} steps. Held-out = diffusion MSE on {2 * prof.eval.heldout_n} fixed "
             f"(x0, t, noise) test triples; FD/KID on {prof.eval.fd_n} samples (DDIM {prof.eval.fd_steps}, "
             f"guidance {prof.eval.cfg_scale}) in the committed classifier's features. Mean ± half-range over "
             "seeds where there are two. 'scratch steps to match' = first scratch step (seed 0) whose held-out "
             f"loss on the curve's {prof.eval.heldout_n}-triple set is at or below the row's run on the same set.", "",
             f"| depth | width | method | budget K | seeds | held-out MSE | FD-{suffix.upper()} | KID | scratch steps to match |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        budget = budget_label(row["method"], row["k"], row["sigma_steps"])
        lines.append(f"| {row['depth']} | {row['width']} | {row['method']} | {budget} "
                     f"| {len(row['seeds'])} | {_fmt(row['heldout'], 4)} | {_fmt(row['fd'], 1)} | {_fmt(row['kid'], 3)} "
                     f"| {scratch_steps_to_match(recs, row)} |")
    if floor:
        lines.append(f"\nFloor (real train vs real test, n={floor.get('n')}): FD {floor.get(f'fd_{suffix}', float('nan')):.2f}, "
                     f"KID {floor.get(f'kid_{suffix}', float('nan')):.4f}")
    planned = planned_runs(prof, "")
    lines.append(f"\nRuns finished: {len(recs)} of {len(planned)} planned.")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["depth", "width", "method", "sigma_steps", "k", "seed", "heldout", "fd", "kid"])
        for r in recs:
            for k, m in sorted(r["points"].items(), key=lambda kv: int(kv[0])):
                w.writerow([r["depth"], r["width"], r["method"], r["sigma_steps"], k, r["seed"], m["heldout"],
                            m.get(f"fd_{suffix}", ""), m.get(f"kid_{suffix}", "")])
    if len(set(prof.methods) - {"scratch"}) > 1:  # claims compare inits; a FINE-vs-scratch profile has none
        write_claims(out)  # the counts bench/results/README.md quotes, regenerated with the table they come from
    plot_curves(recs, out)
    side_by_side(recs, out)
    print("\n".join(lines))


def plot_curves(recs: list[dict], out: Path) -> None:
    """Held-out loss vs total training steps (sigma stage included), one PNG per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for depth, width in sorted({(r["depth"], r["width"]) for r in recs}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in (longest(recs, m, (depth, width)) for m in METHODS):
            if r is None:
                continue
            offset = r["sigma_steps"] if r["method"] == "fine" else 0
            xs = [c["step"] + (offset if c["phase"] == "full" else 0) for c in r["curve"]]
            ax.plot([max(x, 1) for x in xs], [c["heldout"] for c in r["curve"]], label=r["method"], marker=".")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training steps (FINE: sigma stage + full)")
        ax.set_ylabel("held-out diffusion MSE")
        ax.set_title(f"depth {depth}, width {width}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"curves_d{depth}_w{width}.png", dpi=110)
        plt.close(fig)


def side_by_side(recs: list[dict], out: Path) -> None:
    """One PNG per size: seed 0's final sample grid of every run, labelled with method and budget.

    Scratch has one grid per budget (K and 10 K), so equal-step and 10x-step samples sit side by side.
    """
    from PIL import Image, ImageDraw

    for depth, width in sorted({(r["depth"], r["width"]) for r in recs}):
        mine = sorted((r for r in recs if (r["depth"], r["width"], r["seed"]) == (depth, width, 0)),
                      key=lambda r: (METHODS.index(r["method"]), r["full_steps"]))
        # Inits at their final budget; scratch at every budget it has a grid for (K and 10 K).
        shown = [(r, k) for r in mine
                 for k in ([p for p in r["fd_at"] if p] if r["method"] == "scratch" else [r["full_steps"]])]
        panels = [(f"{r['method']} {budget_label(r['method'], k, r['sigma_steps']).replace('σ', 'sigma ')}",
                   Image.open(p).convert("RGB"))
                  for r, k in shown if (p := grid_path(out, r, k)).exists()]
        if not panels:
            continue
        h = max(p.height for _, p in panels) + 16
        canvas = Image.new("RGB", (sum(p.width + 8 for _, p in panels), h), (255, 255, 255))
        x = 0
        draw = ImageDraw.Draw(canvas)
        for title, p in panels:
            draw.text((x + 2, 2), title, fill=(0, 0, 0))
            canvas.paste(p, (x, 16))
            x += p.width + 8
        canvas.save(out / f"samples_d{depth}_w{width}.png")


# -- main ----------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th planned run starting at i")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true", help="only write table.md, table.csv and the PNGs")
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    p.add_argument("--only", action="append", default=None, metavar="GLOB",
                   help="only runs whose label matches, e.g. 'scratch_d1_w128_s0_n5000' or '*_d6_*' (repeatable)")
    p.add_argument("--stop-after", type=float, default=None, metavar="MINUTES",
                   help="after this many minutes, checkpoint the run in progress to <out>/partial/ and stop; "
                        "running again continues it exactly (commit partial/ to carry a run across machines)")
    p.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS")
    a = p.parse_args()
    prof = PROFILES[a.profile]
    if a.report:
        return report(prof)
    torch.set_num_threads(a.threads)
    deadline = time.time() + 60 * a.stop_after if a.stop_after is not None else None
    try:
        run_profile(prof, a.shard, a.max_runs, a.profile, a.only, deadline, a.checkpoint_every)
    except RunPaused as e:
        print(f"size_table: {e}", file=sys.stderr)
    report(prof)


def run_label(run: Run) -> str:
    """A run's name with its budget: scratch has one run per budget."""
    return f"{run_name(run)}_n{run.full_steps}"


def run_profile(prof: Profile, shard: str = "0/1", max_runs: int | None = None, desc: str = "runs",
                only: list[str] | None = None, deadline: float | None = None, checkpoint_every: int = 500) -> None:
    """Run the profile's unfinished runs (this shard's share), appending each to runs.jsonl.

    Each run's dense phase is checkpointed to <out>/partial/<label>.pt and continued from there if
    found; past `deadline` (epoch seconds) the run in progress is saved and RunPaused raised.
    """
    out = results_dir(prof)
    lg = load_learngene(Path(prof.learngene))
    train, test = load(prof.dataset, "train"), load(prof.dataset, "test")
    if not (out / "floor.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        fl = fd_floor(train, test, prof.dataset, prof.eval.fd_n) | {"n": prof.eval.fd_n}
        (out / "floor.json").write_text(json.dumps(fl) + "\n")
    i, n = (int(v) for v in shard.split("/"))
    done = done_keys(out / "runs.jsonl")
    todo = [r for k, r in enumerate(planned_runs(prof, lg.id)) if k % n == i and r.key() not in done
            and (not only or any(fnmatch(run_label(r), pat) for pat in only))][:max_runs]
    for run in tqdm(todo, desc=desc):
        ckpt = Checkpointing(out / "partial" / f"{run_label(run)}.pt", checkpoint_every, deadline)
        append(out / "runs.jsonl", train_run(run, lg, train, test, prof.eval,
                                             grids=lambda k, r=run: grid_path(out, r, k), ckpt=ckpt))


if __name__ == "__main__":
    main()
