"""Issues 16 and 15 (item 4): the default job on domains and classes its learngene never saw, against scratch.

Runs the size table's `new-domain-*` profiles (each target with the learngene the service chooses for it, the new
classes with the ancestry that never saw them; resumable, `--stop-after` shared by all of them) and writes one
summary page over every target:

    nohup python bench/new_domain.py --stop-after 150 > logs/new_domain.log &   # about 1.1 h of one core per target
    python bench/new_domain.py --report

Each target's own table, curves and side-by-side sample panels are under `bench/results/new_domain/<key>/`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from descendants import RunPaused, read_runs  # noqa: E402
from size_table import (  # noqa: E402
    JOB_SIGMA_STEPS,
    NEW_DOMAIN_SIZES,
    NEW_DOMAIN_TARGETS,
    PROFILES,
    _fmt,
    point_rows,
    report,
    results_dir,
    run_profile,
)

from fine.metrics import metric_suffix  # noqa: E402

OUT = ROOT / "bench" / "results" / "new_domain"
OWN_DOMAIN = "cfmnist"  # the colour learngene's source: the one target where FINE should match scratch at 10x
NOTES = {"cfmnist": "the colour learngene's own domain (its held-out images)",
         "cmnist5kg": "colour learngene's look (garment colours, backgrounds), other content (digits)",
         "cmnist5k": "unlike the colour learngene in look and content",
         "mnist5k": "grayscale digits from the Fashion-MNIST learngene",
         "fmnist59": "new classes: Fashion-MNIST 5-9 from an ancestry trained on classes 0-4 only"}


def _row(rows: list[dict], size: tuple[int, int], method: str, k: int) -> dict | None:
    return next((r for r in rows if (r["depth"], r["width"], r["method"], r["k"]) == (*size, method, k)), None)


def cell(row: dict | None, key: str, digits: int) -> str:
    return _fmt(row[key], digits) if row else "–"


def _cmp(fine: dict | None, other: dict | None, key: str) -> str:
    """'yes'/'no' with FINE's relative difference, for lower-is-better metric `key`."""
    if not fine or not other or not fine[key] or not other[key]:
        return "–"
    f, o = (sum(v[key]) / len(v[key]) for v in (fine, other))
    return f"{'**yes**' if f <= o else 'no'} ({(f / o - 1) * 100:+.0f} %)"


def summary() -> str:
    s, s10 = JOB_SIGMA_STEPS, 10 * JOB_SIGMA_STEPS
    lines = ["# New domains and new classes: the default job against scratch (issues 16 and 15)", "",
             "Command: `python bench/new_domain.py` (resumable; `--stop-after MIN`), then `--report`. FINE = the "
             f"service's default job: assembled, then {s} σ steps (biases; patch embedding and final layer too where "
             f"channels or size differ); scratch = DiT's init and {s} or {s10} full steps. Seed 0, the target's "
             "training subset of up to 5,000 images (the digit targets have 4,000: all), batch 64. Held-out = diffusion MSE "
             "on 2,000 fixed test triples; FD in the "
             "committed classifier trained on that target (500 samples, DDIM 25, guidance 1.5; floor in each "
             "target's table). Per-target tables, curves and sample panels: `<target>/`.", "",
             "Goal: FINE beats scratch at equal steps on every target (held-out and FD), and matches scratch at "
             f"10x ({s10}) on the colour learngene's own domain (`{OWN_DOMAIN}`). New classes (`fmnist59`, issue 15 "
             "item 4) are measured by the same two comparisons.", ""]
    for key, (dataset, lg) in NEW_DOMAIN_TARGETS.items():
        prof = PROFILES[f"new-domain-{key}"]
        recs = read_runs(results_dir(prof) / "runs.jsonl")
        rows = point_rows(recs, metric_suffix(dataset) or "fd")
        lines += [f"## `{key}` = {dataset}: {NOTES[key]}; learngene `{Path(lg).parent.parent.name}`", "",
                  f"| depth | width | FINE held-out | scratch@{s} | scratch@{s10} | FINE FD | scratch@{s} FD | "
                  f"scratch@{s10} FD | beats @{s}: held-out / FD | ≤ @{s10}: held-out / FD |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for size in NEW_DOMAIN_SIZES:
            f, a, b = _row(rows, size, "fine", 0), _row(rows, size, "scratch", s), _row(rows, size, "scratch", s10)
            lines.append(f"| {size[0]} | {size[1]} | {cell(f, 'heldout', 4)} | {cell(a, 'heldout', 4)} | "
                         f"{cell(b, 'heldout', 4)} | {cell(f, 'fd', 1)} | {cell(a, 'fd', 1)} | {cell(b, 'fd', 1)} | "
                         f"{_cmp(f, a, 'heldout')} / {_cmp(f, a, 'fd')} | {_cmp(f, b, 'heldout')} / {_cmp(f, b, 'fd')} |")
        lines += ["", f"Runs finished: {len(recs)}.", ""]
    text = "\n".join(lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "table.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only-target", action="append", choices=sorted(NEW_DOMAIN_TARGETS), default=None)
    p.add_argument("--stop-after", type=float, default=None, metavar="MINUTES")
    p.add_argument("--shard", default="0/1", help="i/n: every n-th planned run of each target (one process per core)")
    p.add_argument("--report", action="store_true", help="only write the per-target reports and the summary")
    a = p.parse_args()
    keys = a.only_target or list(NEW_DOMAIN_TARGETS)
    if not a.report:
        torch.set_num_threads(a.threads)
        deadline = time.time() + 60 * a.stop_after if a.stop_after is not None else None
        for key in keys:
            try:
                run_profile(PROFILES[f"new-domain-{key}"], a.shard, desc=key, deadline=deadline)
            except RunPaused as e:
                print(f"new_domain: {e}", file=sys.stderr)
                break
    for key in keys:
        if (results_dir(PROFILES[f"new-domain-{key}"]) / "runs.jsonl").exists():
            report(PROFILES[f"new-domain-{key}"])
    print(summary())


if __name__ == "__main__":
    main()
