"""Fast sampler parity: FD-FMNIST and wall time of DPM-Solver++ (2M) against DDIM-50 at the same n.

Every row samples n images for the same n real test images and the same labels (a fixed
permutation of those images' labels, as bench/descendants.py `measure` draws them), with guidance
1.5, from start noise seeded by the row's seed; only the sampler, its steps and the timestep grid
change. Rows are appended to results.jsonl as they finish (a rerun skips those already there), and
table.md is rebuilt from it, with the fp32 matmul rate measured in the same run.

    OMP_NUM_THREADS=1 python bench/sampler_parity.py --threads 1
    OMP_NUM_THREADS=1 python bench/sampler_parity.py --threads 1 --only bf16   # bf16 autocast rows (AMX)

A row's precision is fp32 unless its slug ends in `_bf16` (CPU autocast to bfloat16 around every model
call, the same start noise): where the CPU has AMX that is the fast path, and these rows check it holds FD.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from descendants import append, fd_floor, read_runs  # noqa: E402
from speed import matmul_rate  # noqa: E402

from fine.assembly import assemble  # noqa: E402
from fine.data import ImageData, load  # noqa: E402
from fine.diffusion import DPM_SPACING, Diffusion  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.images import save_grid, to_uint8  # noqa: E402
from fine.metrics import load_feature_classifier, named, sample_quality  # noqa: E402
from fine.model import DiT  # noqa: E402
from fine.pipeline import sampling  # noqa: E402
from fine.spec import SHIPPED_LEARNGENES  # noqa: E402

OUT = ROOT / "bench" / "results" / "sampler"
LEARNGENE = ROOT / SHIPPED_LEARNGENES["fmnist-v1"]  # what results/sampler was measured on
DATASET = "fashion-mnist"
CFG = 1.5
BATCH = 250
PER_CLASS = 8  # grid: the first 8 samples of each class, one row per class
DPM = "dpm++2m"
# (model, sampler, steps, spacing, seed[, precision]), in the order they run: key rows first.
ANC, D6 = "ancestry d8 w128", "fine descendant d6 w128"
FP32, BF16 = "fp32", "bf16"
Row = tuple  # (model, sampler, steps, spacing, seed) at fp32, or with a sixth field, the precision
ROWS: list[Row] = (
    [(ANC, "ddim", 50, "", 0)] + [(ANC, DPM, k, "logsnr", 0) for k in (10, 15, 20)]
    + [(ANC, "ddim", 50, "", 1)] + [(ANC, DPM, k, "logsnr", 1) for k in (10, 15, 20)]
    + [(ANC, "ddim", k, "", 0) for k in (10, 15, 20, 25)]
    + [(ANC, DPM, k, "time", 0) for k in (10, 15)]
    # (the order the rows ran in; time-uniform became the default grid from here on)
    + [(ANC, DPM, k, "time", 1) for k in (10, 15)] + [(ANC, DPM, 20, "time", s) for s in (0, 1)]
    + [(ANC, "ddim", k, "", 1) for k in (10, 20)]
    + [(D6, "ddim", 50, "", s) for s in (0, 1)] + [(D6, DPM, k, "time", s) for k in (10, 15) for s in (0, 1)]
    + [(ANC, DPM, k, "quadratic", 0) for k in (10, 15)]
    + [(D6, "ddim", k, "", 0) for k in (10, 15)]
    # bf16 autocast (issue 17), paired with the fp32 rows above on the same start noise
    + [(ANC, DPM, 15, "time", s, BF16) for s in (0, 1)] + [(ANC, "ddim", 25, "", s, BF16) for s in (0, 1)]
)


def full(row: Row) -> tuple[str, str, int, str, int, str]:
    return (*row, FP32) if len(row) == 5 else row


def key(rec: dict) -> tuple:
    return (rec["model"], rec["sampler"], rec["steps"], rec["spacing"], rec["seed"], rec.get("precision", FP32))


def slug(model: str, sampler: str, steps: int, spacing: str, seed: int, precision: str = FP32) -> str:
    name = "ancestry" if model == ANC else "d6w128"
    tail = "" if precision == FP32 else f"_{precision}"
    return f"{name}_{sampler.replace('+', 'p')}{steps}{'_' + spacing if spacing else ''}_s{seed}{tail}"


def build_model(name: str) -> DiT:
    anc = load_learngene(LEARNGENE).model
    return anc if name == ANC else assemble(anc, 6, 128, "fine")


@torch.no_grad()
def draw(model: DiT, y: torch.Tensor, sampler: str, steps: int, spacing: str, seed: int,
         precision: str = FP32) -> torch.Tensor:
    """n images for labels y, in batches of BATCH, from one generator seeded with `seed`."""
    with sampling(precision):
        return _draw(model, y, sampler, steps, spacing, seed).float()


def _draw(model: DiT, y: torch.Tensor, sampler: str, steps: int, spacing: str, seed: int) -> torch.Tensor:
    d = Diffusion()
    g = torch.Generator().manual_seed(seed)
    shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    if sampler != DPM or spacing == DPM_SPACING:
        return torch.cat([d.sample(model, y[i : i + BATCH], shape, steps=steps, sampler=sampler, cfg_scale=CFG, generator=g)
                          for i in range(0, len(y), BATCH)])
    # another grid than the default: the same start noise and steps as sample() would use
    net = model.materialize().eval() if model.genes is not None else model.eval()
    out = []
    for i in range(0, len(y), BATCH):
        x = torch.randn((len(y[i : i + BATCH]), *shape), generator=g)
        out.append(d.dpmpp_2m(net, x, y[i : i + BATCH], d.dpm_timesteps(steps, spacing), CFG, model.cfg.num_classes))
    return torch.cat(out)


def grid(images: torch.Tensor, y: torch.Tensor, path: Path) -> Path:
    """One row per class: the first PER_CLASS samples of each class."""
    picks = torch.cat([torch.nonzero(y == c).flatten()[:PER_CLASS] for c in sorted(y.unique().tolist())])
    return save_grid(to_uint8(images[picks]), path, rows=len(y.unique()))


def side_by_side(left: Path, right: Path, path: Path) -> None:
    a, b = Image.open(left), Image.open(right)
    canvas = Image.new("L", (a.width + b.width + 16, max(a.height, b.height)), 0)
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + 16, 0))
    canvas.save(path)


def matmul_gflops() -> float:
    r = matmul_rate(1024, 20)
    return r["gflop"] / r["s"]


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    results = out / "results.jsonl"
    done = {key(r) for r in read_runs(results) if r.get("kind") == "row"}
    test, train = load(DATASET, "test"), load(DATASET, "train")
    real: ImageData = test.subset(args.n, seed=0)
    y = real.labels[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))]
    clf = load_feature_classifier(DATASET)
    assert clf is not None
    append(results, {"kind": "machine", "matmul_gflops": matmul_gflops(), "threads": torch.get_num_threads(),
                     "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    if not any(r.get("kind") == "floor" for r in read_runs(results)):
        append(results, {"kind": "floor", **fd_floor(train, test, DATASET, args.n)})
    models: dict[str, DiT] = {}
    for row in map(full, ROWS):
        if row in done or (args.only and not any(s in slug(*row) for s in args.only)):
            continue
        name, sampler, steps, spacing, seed, precision = row
        model = models.setdefault(name, build_model(name))
        t0 = time.perf_counter()
        made = draw(model, y, sampler, steps, spacing, seed, precision)
        secs = time.perf_counter() - t0
        q = named(sample_quality(made, real, clf), DATASET)
        grid(made, y, out / "grids" / f"{slug(*row)}.png")
        rec = {"kind": "row", "model": name, "sampler": sampler, "steps": steps, "spacing": spacing, "seed": seed,
               "precision": precision, "n": args.n, "cfg_scale": CFG, "sample_s": secs, **q}
        if precision != FP32:  # its fp32 twin again, in the same invocation: a paired check on one machine
            t0 = time.perf_counter()
            twin = draw(model, y, sampler, steps, spacing, seed, FP32)
            rec["fp32_twin"] = {"sample_s": time.perf_counter() - t0, **named(sample_quality(twin, real, clf), DATASET),
                                "rms_pixels": (made - twin).pow(2).mean().sqrt().item(),
                                "max_pixels": (made - twin).abs().max().item()}
        append(results, rec)
        print(rec, flush=True)
    append(results, {"kind": "machine", "matmul_gflops": matmul_gflops(), "threads": torch.get_num_threads(),
                     "time": time.strftime("%Y-%m-%d %H:%M:%S")})


# Convergence probe: how far each sampler lands from the ODE's answer (DPM-Solver++ at 50 steps stands in for it).
PROBE_N = 100
PROBE: list[tuple[str, int, str]] = [("ddim", 10, ""), ("ddim", 20, ""), ("ddim", 50, ""), ("ddim", 200, ""),
                                     (DPM, 10, "time"), (DPM, 15, "time"), (DPM, 10, "logsnr"), (DPM, 15, "logsnr"),
                                     (DPM, 50, "logsnr")]


def converge(args: argparse.Namespace) -> None:
    """The first PROBE_N images of seed 0 by each PROBE sampler: FD against the same real images, RMS to DPM++-50."""
    out = Path(args.out)
    real = load(DATASET, "test").subset(args.n, seed=0)
    y = real.labels[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))][:PROBE_N]
    clf = load_feature_classifier(DATASET)
    assert clf is not None
    model = build_model(ANC)
    made, recs = {}, []
    for row in PROBE:
        t0 = time.perf_counter()
        made[row] = draw(model, y, *row, 0)
        q = named(sample_quality(made[row], real, clf, n_real=len(real)), DATASET)
        recs.append({"sampler": row[0], "steps": row[1], "spacing": row[2], "sample_s": time.perf_counter() - t0, **q})
        print(recs[-1], flush=True)
    ref = made[(DPM, 50, "logsnr")]
    for r in recs:
        r["rms_to_dpm50"] = (made[(r["sampler"], r["steps"], r["spacing"])] - ref).pow(2).mean().sqrt().item()
    (out / "converge.json").write_text(json.dumps({"model": ANC, "n": PROBE_N, "n_real": len(real), "seed": 0,
                                                   "rows": recs}, indent=1) + "\n")


def converge_lines(out: Path) -> list[str]:
    path = out / "converge.json"
    if not path.exists():
        return []
    c = json.loads(path.read_text())
    lines = ["## Convergence probe", "",
             f"`--converge`: {c['model']}, the first {c['n']} images of seed 0 (same start noise and labels for every "
             f"sampler), FD-FMNIST against the same {c['n_real']} real images (FD at n = {c['n']} is biased upward: compare "
             "within this table only), and the RMS pixel distance (in [-1, 1]) to DPM-Solver++ at 50 steps, which stands "
             "in for the exact ODE solution (log-SNR grid).", "",
             "| sampler | steps | grid | FD-FMNIST | RMS to DPM++-50 |", "| --- | ---: | --- | ---: | ---: |"]
    lines += [f"| {r['sampler']} | {r['steps']} | {r['spacing'] or '-'} | {r['fd_fmnist']:.2f} | {r['rms_to_dpm50']:.4f} |"
              for r in c["rows"]]
    return lines


def write_table(out: Path, args: argparse.Namespace) -> None:
    recs = read_runs(out / "results.jsonl")
    rows = [r for r in recs if r["kind"] == "row"]
    rates = [r["matmul_gflops"] for r in recs if r["kind"] == "machine"]
    fl = next((r for r in recs if r["kind"] == "floor"), {})
    by: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r.get("precision", FP32) == FP32:
            by.setdefault((r["model"], r["sampler"], r["steps"], r["spacing"]), {})[r["seed"]] = r
    lines = [
        f"# Fast sampler parity: DPM-Solver++ (2M) vs DDIM-50, FD-FMNIST at n = {args.n}",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/sampler_parity.py --threads {args.threads}` "
        f"(results.jsonl holds every row; a rerun skips rows already there).",
        "",
        f"Machine: 2 cores shared with a training run; {args.threads} thread; fp32 matmul 1024x1024 "
        f"(median of 20, timed torch.matmul) measured at the start of each invocation and at its end when it ran to completion: "
        f"{', '.join(f'{g:.1f}' for g in rates)} GFLOP/s.",
        "",
        f"Protocol: n = {args.n} generated images against the same {args.n} Fashion-MNIST test images "
        f"(`test.subset({args.n}, seed=0)`), labels a fixed permutation of theirs, guidance {CFG}, batches of {BATCH}; "
        f"the seed is that of the start noise. DDIM as `Diffusion.sample(sampler='ddim')`; DPM-Solver++ (2M) as "
        f"`sampler='dpm++2m'` (grid `{DPM_SPACING}` unless the spacing column says otherwise). "
        f"Floor (real train vs real test, n = {fl.get('n', '?')}): FD-FMNIST {fl.get('fd_fmnist', float('nan')):.2f}.",
        "",
        f"| model | sampler | steps = model calls | grid | FD-FMNIST seed 0 | seed 1 | mean | KID seed 0 "
        f"| sampling s ({args.n} images) |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (model, sampler, steps, spacing), seeds in by.items():
        fds = [seeds[s]["fd_fmnist"] for s in sorted(seeds)]
        first = seeds[min(seeds)]
        cells = [f"{seeds[s]['fd_fmnist']:.2f}" if s in seeds else "" for s in (0, 1)]
        lines.append(f"| {model} | {sampler} | {steps} | {spacing or '-'} | {cells[0]} | {cells[1]} | "
                     f"{statistics.mean(fds):.2f} | {first['kid_fmnist']:.4f} | "
                     f"{statistics.mean(seeds[s]['sample_s'] for s in seeds):.0f} |")
    lines += ["", "Sampling seconds are wall time on a machine shared with a training run, so they swing with its load "
              "(the same row took 1x-3x); the cost that does not swing is the model calls: one batched call (conditional "
              "and unconditional) per step for both samplers, so time is proportional to steps."]
    lines += ["", *precision_lines([r for r in rows if r.get("precision", FP32) != FP32])]
    advice, chosen = recommend(by)
    pairs = ", ".join(f"`grids/{p.name}`" for p in pair_grids(out, chosen))
    lines += ["", *advice, "", *converge_lines(out), "",
              "Grids (one row per class, the first 8 samples of each class from seed 0; DDIM-50 left, "
              f"DPM-Solver++ right, the same start noise): {pairs}; every row's grid is in `grids/`."]
    notes = out / "notes.md"  # the hand-written reading of these numbers, kept across rebuilds
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def precision_lines(rows: list[dict]) -> list[str]:
    """bf16 rows against their fp32 twins, drawn in the same invocation from the same start noise."""
    if not rows:
        return []
    lines = ["## bf16 autocast against fp32 (same start noise, same invocation)", "",
             "Each bf16 row's fp32 twin is drawn again right after it, so both times are from one machine state. "
             "`RMS` / `max` = pixel distance between the two sets of images (range [-1, 1]).", "",
             "| model | sampler | steps | seed | FD fp32 | FD bf16 | bf16 − fp32 | RMS | max | s fp32 | s bf16 | speed-up |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        t = r["fp32_twin"]
        lines.append(f"| {r['model']} | {r['sampler']} | {r['steps']} | {r['seed']} | {t['fd_fmnist']:.2f} | "
                     f"{r['fd_fmnist']:.2f} | {r['fd_fmnist'] - t['fd_fmnist']:+.2f} | {t['rms_pixels']:.4f} | "
                     f"{t['max_pixels']:.3f} | {t['sample_s']:.0f} | {r['sample_s']:.0f} | "
                     f"{t['sample_s'] / r['sample_s']:.2f}x |")
    return lines


def pair_grids(out: Path, chosen: dict[str, int]) -> list[Path]:
    """DDIM-50 and DPM-Solver++ at the chosen steps, side by side, per model."""
    made = []
    for model, steps in chosen.items():
        left = out / "grids" / f"{slug(model, 'ddim', 50, '', 0)}.png"
        right = out / "grids" / f"{slug(model, DPM, steps, DPM_SPACING, 0)}.png"
        if left.exists() and right.exists():
            path = out / "grids" / f"side_by_side_{slug(model, DPM, steps, DPM_SPACING, 0)}.png"
            side_by_side(left, right, path)
            made.append(path)
    return made


def recommend(by: dict[tuple, dict[int, dict]]) -> tuple[list[str], dict[str, int]]:
    """Per model and sampler, the fewest steps whose two-seed mean FD is within DDIM-50's seed spread of its mean."""
    out, chosen = ["## Recommendation", ""], {}
    for model in dict.fromkeys(k[0] for k in by):
        ref = by.get((model, "ddim", 50, ""), {})
        if len(ref) < 2:
            continue
        fd = [ref[s]["fd_fmnist"] for s in sorted(ref)]
        mean, spread = statistics.mean(fd), max(fd) - min(fd)
        out.append(f"- {model}: DDIM-50 FD-FMNIST {mean:.2f} (seeds {', '.join(f'{v:.2f}' for v in fd)}; spread {spread:.2f}).")
        for sampler, grid_ in ((DPM, DPM_SPACING), ("ddim", "")):
            ok = []
            for (m, smp, steps, spacing), seeds in sorted(by.items(), key=lambda kv: kv[0][2]):
                if (m, smp, spacing) == (model, sampler, grid_) and len(seeds) >= 2 and (smp, steps) != ("ddim", 50):
                    got = statistics.mean(seeds[s]["fd_fmnist"] for s in seeds)
                    paired = statistics.mean(seeds[s]["fd_fmnist"] - ref[s]["fd_fmnist"] for s in seeds if s in ref)
                    ok.append((steps, got, paired, abs(got - mean) <= spread, got <= mean + spread))
            if not ok:
                continue
            held = [s for s, _, _, good, _ in ok if good]
            not_worse = [s for s, _, _, _, fine in ok if fine]
            if sampler == DPM:
                chosen[model] = held[0] if held else ok[0][0]
            where = {(True, True): "within the spread", (False, True): "lower by more than the spread",
                     (False, False): "higher by more than the spread"}
            detail = "; ".join(f"{s} steps {g:.2f} (minus DDIM-50 on the same seed: {d:+.2f} on average; {where[(good, fine)]})"
                               for s, g, d, good, fine in ok)
            verdict = (f"fewest steps within DDIM-50's spread (comparable with it): **{held[0]}**" if held
                       else "**no step count tried is within DDIM-50's spread**")
            verdict += f"; fewest not worse than DDIM-50 + spread: {not_worse[0] if not_worse else 'none'}"
            out.append(f"  - {sampler}{f' (grid {grid_})' if grid_ else ''} two-seed means: {detail}; {verdict}.")
    return out, chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--only", nargs="*", default=[], help="run only rows whose slug contains one of these")
    p.add_argument("--table", action="store_true", help="only rebuild table.md and the side-by-side grid")
    p.add_argument("--converge", action="store_true", help="run the convergence probe (converge.json), then the table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.converge:
        converge(args)
    if not (args.table or args.converge):
        run(args)
    write_table(Path(args.out), args)


if __name__ == "__main__":
    main()
