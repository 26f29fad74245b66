"""Issue 15, item 5: the default job's checkpoint beside scratch at equal steps (and at 5,000 / 20,000 steps).

Both descendants are built, trained, saved and evaluated by the service's pipeline (`fine.pipeline.init_descendant`,
what a worker runs): the default job as `make run` submits it, and the same spec with `method=scratch` and as many
full steps as the default job has sigma steps (a sigma step costs 0.98-1.04x a dense step, bench/results/speed.md,
so this is equal wall time to a few per cent; both runs' seconds are in the table). The size table's scratch grids
at 5,000 and 20,000 steps (same size, subset and seed; DDIM-25 grids, the table's protocol) sit beside them.

    python bench/headline.py            # bench/results/headline/{samples.png,table.md,runs.json}
    python bench/headline.py --report   # table.md and samples.png from runs.json only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from descendants import longest, read_runs, scratch_steps  # noqa: E402

from fine.data import load  # noqa: E402
from fine.diffusion import Diffusion  # noqa: E402
from fine.formats import load_dense  # noqa: E402
from fine.metrics import heldout_loss  # noqa: E402
from fine.pipeline import init_descendant  # noqa: E402
from fine.spec import DEFAULT_LEARNGENE, JobSpec  # noqa: E402
from service.run_default import DEFAULT_JOB  # noqa: E402  (make run's job)

OUT = ROOT / "bench" / "results" / "headline"
SIZE_TABLE = ROOT / "bench" / "results" / "size_table"
LONG_SCRATCH = (5000, 20000)  # the size table's scratch budgets shown beside


def specs() -> dict[str, JobSpec]:
    fine = JobSpec(**DEFAULT_JOB)
    return {"fine": fine,
            "scratch": JobSpec(**DEFAULT_JOB, method="scratch", sigma_steps=0, finetune_steps=fine.sigma_steps)}


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, spec in specs().items():
        res = init_descendant(spec, ROOT / DEFAULT_LEARNGENE, out_dir=out / name)
        runs[name] = {"spec": spec.model_dump(), "metrics": res.metrics, "timings": res.timings,
                      "curve_heldout": curve_heldout(out / name, spec.dataset)}
        print(name, res.metrics, {k: round(v, 1) for k, v in res.timings.items()}, flush=True)
    runs["threads"] = torch.get_num_threads()
    (out / "runs.json").write_text(json.dumps(runs, indent=1, default=str) + "\n")


def curve_heldout(checkpoint: Path, dataset: str) -> float:
    """Held-out MSE by the size table's curve protocol (1,000 fixed test triples, seed 0), so the steps to match
    compare like with like (the job's own evaluation draws other triples: 500 images, the job's seed)."""
    model, _ = load_dense(checkpoint)
    return heldout_loss(model.eval(), Diffusion(), load(dataset, "test"), n=1000)


def scratch_steps_to_match(heldout: float) -> dict[int, int | None]:
    """Per seed, the first step of the size table's scratch d6 w128 curve at or below `heldout` (None: never)."""
    recs = [r for r in read_runs(SIZE_TABLE / "runs.jsonl") if r["dataset"] == "fashion-mnist"]
    seeds = sorted({r["seed"] for r in recs if r["method"] == "scratch" and (r["depth"], r["width"]) == (6, 128)})
    return {seed: scratch_steps(longest(recs, "scratch", (6, 128), seed), heldout) for seed in seeds}


def report(out: Path) -> None:
    runs = json.loads((out / "runs.json").read_text())
    panels = [(f"FINE default job: {runs['fine']['spec']['sigma_steps']} sigma steps", out / "fine" / "samples.png"),
              (f"scratch, {runs['scratch']['spec']['finetune_steps']} steps (equal)", out / "scratch" / "samples.png")]
    panels += [(f"scratch, {k:,} steps (size table)", SIZE_TABLE / "samples" / f"scratch_d6_w128_s0_n{k}.png")
               for k in LONG_SCRATCH]
    images = [(t, Image.open(p).convert("RGB")) for t, p in panels if p.exists()]
    h = max(im.height for _, im in images) + 18
    canvas = Image.new("RGB", (sum(im.width + 10 for _, im in images), h), (255, 255, 255))
    draw, x = ImageDraw.Draw(canvas), 0
    for title, im in images:
        draw.text((x + 2, 3), title, fill=(0, 0, 0))
        canvas.paste(im, (x, 18))
        x += im.width + 10
    canvas.save(out / "samples.png")
    lines = ["# The default job against scratch (issue 15, item 5)", "",
             f"Command: `python bench/headline.py` ({runs['threads']} torch threads), then `--report`. Both rows run "
             "`fine.pipeline.init_descendant` (the worker's pipeline) on the default job's spec; scratch gets as many "
             "full steps as the job has sigma steps. Held-out = the job's evaluation (diffusion MSE on its eval images, "
             "fixed seeds); FD-FMNIST on the same number of samples (DPM-Solver++ 15 steps, guidance 1.5) with the "
             "floor of real train vs real test at that n. `train s` = assemble + training stage; `scratch steps to "
             "match` = the first point of the size table's scratch curve (d6 w128, seeds 0 / 1) at or below this row's "
             "`curve held-out` (the same protocol as those curves: 1,000 fixed test triples, seed 0); `never` = not "
             "within the curve's 20,000 steps.", "",
             "| run | steps | held-out MSE (job) | curve held-out | FD-FMNIST | floor | train s | eval s | "
             "scratch steps to match |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ("fine", "scratch"):
        r, m, t = runs[name], runs[name]["metrics"], runs[name]["timings"]
        steps = r["spec"]["sigma_steps"] if name == "fine" else r["spec"]["finetune_steps"]
        train_s = sum(v for k, v in t.items() if k in ("assemble", "sigma", "finetune"))
        match = scratch_steps_to_match(r["curve_heldout"])
        lines.append(f"| {name} | {steps} | {m['heldout_loss']:.4f} | {r['curve_heldout']:.4f} | "
                     f"{m.get('fd_fmnist', float('nan')):.1f} | "
                     f"{m.get('fd_fmnist_floor', float('nan')):.2f} | {train_s:.0f} | {t.get('eval', 0):.0f} | "
                     + " / ".join("never" if v is None else f"{v:,}" for _, v in sorted(match.items())) + " |")
    lines += ["", "![samples](samples.png)", "",
              "Left to right: the default job's grid, scratch at equal steps, and the size table's scratch grids at "
              f"{' and '.join(f'{k:,}' for k in LONG_SCRATCH)} steps (seed 0; those two were sampled with DDIM-25)."]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if not a.report:
        run(a.out)
    report(a.out)


if __name__ == "__main__":
    main()
