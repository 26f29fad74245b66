"""Issue 15: the paper's protocol in miniature, the product number and instant descendants.

The ancestry trained A = 20,000 steps (learngenes/fmnist-v2). At depths 2 / 6 / 12 (width 128) and
depth 6 widths 64 / 96, FINE gets the service's default sigma stage and then A/3 full steps; it is
compared with scratch at A steps. Two rules for the dense phase, the same for both methods:

- `--rule ema` (the service's, fine.spec.FINETUNE_OPTIM): the runs measure the EMA of the dense weights;
  scratch trains here too (one 20,000-step run per size and seed, measured at 2,000 / 5,000 / 6,666 / 20,000).
- `--rule raw` (the first table): the raw weights; the scratch runs are the size table's
  (`size_table/runs.jsonl`: same code, seeds, subset, optimiser and evaluation protocol; they do not
  depend on any learngene), so only FINE trains.

    nohup python bench/paper_protocol.py --rule ema --stop-after 150 > logs/paper.log &   # hours, resumable
    python bench/paper_protocol.py --rule ema --report

Three tables from the same runs:
1. paper protocol: FINE sigma + A/3 against scratch@A (held-out MSE and FD);
2. the product number: the sigma stage alone (the service's default job), the scratch steps that
   match its held-out loss, and its FD beside scratch@5,000;
3. instant descendants: held-out right after assembly against after the sigma stage.
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

from descendants import RunPaused, curve_at, longest, read_runs, scratch_steps  # noqa: E402
from size_table import PROFILES, Profile, _fmt, results_dir, run_profile  # noqa: E402

from fine.metrics import metric_suffix  # noqa: E402
from fine.spec import FINETUNE_OPTIM, JobSpec  # noqa: E402

ANCESTRY_STEPS = 20_000
FULL_STEPS = ANCESTRY_STEPS // 3  # A/3
SIZES = ((2, 128), (6, 128), (12, 128), (6, 64), (6, 96))
LEARNGENE = ROOT / "learngenes" / "fmnist-v2" / "learngene" / "learngene.safetensors"
# FINE gets a second seed wherever the scratch side has one (the size table's headline sizes).
SCRATCH_A, SCRATCH_PRODUCT = ANCESTRY_STEPS, 5000  # scratch budgets compared with
_COMMON = {"sizes": SIZES, "budgets": (0, 2000, FULL_STEPS), "sigma_steps": JobSpec.model_fields["sigma_steps"].default,
           "seeds": PROFILES["full"].seeds, "headline": PROFILES["full"].headline, "learngene": str(LEARNGENE)}
PROFILES_BY_RULE = {
    "raw": Profile("paper_protocol", methods=("fine",), **_COMMON),
    "ema": Profile("paper_protocol_ema", methods=("fine", "scratch"), scratch_budgets=(SCRATCH_A,),
                   scratch_fd=(SCRATCH_PRODUCT,), ema=FINETUNE_OPTIM.ema, **_COMMON),
}
PROFILE = PROFILES_BY_RULE["raw"]
SIZE_TABLE = ROOT / "bench" / "results" / "size_table" / "runs.jsonl"  # the raw rule's scratch runs


def _by_seed(recs: list[dict], method: str, size: tuple[int, int], k: int) -> dict[int, dict]:
    """Each seed's measurements at K full steps of this method and size."""
    return {r["seed"]: r["points"][str(k)] for r in recs
            if r["method"] == method and (r["depth"], r["width"]) == size and str(k) in r["points"]}


def _points(recs: list[dict], method: str, size: tuple[int, int], k: int, suffix: str) -> tuple[list, list]:
    """Every seed's (held-out, FD) at K full steps of this method and size."""
    at = _by_seed(recs, method, size, k).values()
    return [m["heldout"] for m in at], [m[f"fd_{suffix}"] for m in at if f"fd_{suffix}" in m]


def _change(raw: dict[int, dict], ema: dict[int, dict]) -> str:
    """Raw -> EMA held-out over the seeds both rules ran."""
    seeds = sorted(set(raw) & set(ema))
    if not seeds:
        return "–"
    r, e = (sum(d[s]["heldout"] for s in seeds) / len(seeds) for d in (raw, ema))
    return f"{r:.4f} → {e:.4f} ({(e / r - 1) * 100:+.1f} %, {len(seeds)} seed{'s' * (len(seeds) > 1)})"


def _verdict(fine: list[float], scratch: list[float]) -> str:
    if not fine or not scratch:
        return "–"
    f, s = sum(fine) / len(fine), sum(scratch) / len(scratch)
    return f"{'**yes**' if f <= s else 'no'} ({(f / s - 1) * 100:+.1f} %)"


def report(rule: str = "raw") -> str:
    prof = PROFILES_BY_RULE[rule]
    out = results_dir(prof)
    recs = read_runs(out / "runs.jsonl")
    scratch_src = SIZE_TABLE if rule == "raw" else out / "runs.jsonl"
    scratch = [r for r in read_runs(scratch_src) if r["method"] == "scratch" and r["dataset"] == prof.dataset]
    recs = [r for r in recs if r["method"] == "fine"]
    sfx = metric_suffix(prof.dataset) or "fd"
    s = prof.sigma_steps
    weights = ("the raw weights" if rule == "raw" else
               f"an EMA of the dense weights (decay {prof.ema}, warmed up as fine.training.Ema; the service's rule)")
    title = "raw weights" if rule == "raw" else "the service's EMA rule"
    lines = [f"# The paper's protocol in miniature, {title} (issue 15)", "",
             f"Command: `python bench/paper_protocol.py --rule {rule}` (resumable; `--stop-after MIN`), then "
             f"`--rule {rule} --report`. "
             f"Learngene `{LEARNGENE.relative_to(ROOT)}` (ancestry A = {ANCESTRY_STEPS:,} steps). FINE: the service's "
             f"default sigma stage ({s} steps) then K full steps; scratch: `{scratch_src.relative_to(ROOT)}`. "
             "Every run: Fashion-MNIST, the same 5,000-image subset, batch 64, "
             f"AdamW lr 1e-3 after 50 warm-up steps; every measurement sees {weights}. "
             "Held-out = diffusion MSE on 2,000 fixed test triples (tables 1-2) "
             f"or on the curve's 1,000 (scratch steps to match, table 2; table 3); FD-{sfx.upper()} on 500 samples (DDIM 25, "
             "guidance 1.5). Mean ± half-range over the seeds shown.", "",
             f"## 1. FINE σ{s} + A/3 ({FULL_STEPS:,}) against scratch@A ({SCRATCH_A:,})", "",
             "| depth | width | seeds FINE / scratch | FINE held-out | scratch held-out | FINE ≤ scratch? | FINE FD | "
             "scratch FD |", "|---|---|---|---|---|---|---|---|"]
    for size in SIZES:
        fh, ff = _points(recs, "fine", size, FULL_STEPS, sfx)
        sh, sf = _points(scratch, "scratch", size, SCRATCH_A, sfx)
        lines.append(f"| {size[0]} | {size[1]} | {len(fh)} / {len(sh)} | {_fmt(fh, 4)} | {_fmt(sh, 4)} | "
                     f"{_verdict(fh, sh)} | {_fmt(ff, 1)} | {_fmt(sf, 1)} |")
    lines += ["", f"## 2. The product number: the default job (σ{s}, no full steps)", "",
              "Goal: its held-out loss is worth ≥ 5,000 scratch steps at every size.", "",
              "| depth | width | FINE σ held-out | scratch steps to match (seed 0) | FINE σ FD | "
              f"scratch@{SCRATCH_PRODUCT:,} held-out | scratch@{SCRATCH_PRODUCT:,} FD |", "|---|---|---|---|---|---|---|"]
    for size in SIZES:
        fh, ff = _points(recs, "fine", size, 0, sfx)
        sh, sf = _points(scratch, "scratch", size, SCRATCH_PRODUCT, sfx)
        own, ref = longest(recs, "fine", size), longest(scratch, "scratch", size)
        match = "–"
        if own is not None and ref is not None:
            hit = scratch_steps(ref, curve_at(own, 0))
            match = f"{hit:,}" if hit is not None else f"> {ref['full_steps']:,}"
        lines.append(f"| {size[0]} | {size[1]} | {_fmt(fh, 4)} | {match} | {_fmt(ff, 1)} | {_fmt(sh, 4)} | "
                     f"{_fmt(sf, 1)} |")
    lines += ["", "## 3. Instant descendants: right after assembly against after the σ stage", "",
              "Goal: within 10 %. Held-out on the curve's 1,000 triples (seed 0).", "",
              "| depth | width | assembled | after σ stage | assembled / σ stage |", "|---|---|---|---|---|"]
    for size in SIZES:
        own = longest(recs, "fine", size)
        if own is None:
            lines.append(f"| {size[0]} | {size[1]} | – | – | – |")
            continue
        init = next(c["heldout"] for c in own["curve"] if c["phase"] == "init")
        after = curve_at(own, 0)
        lines.append(f"| {size[0]} | {size[1]} | {init:.4f} | {after:.4f} | {init / after:.3f} |")
    lines += ["", "## 4. Where the head start goes: FINE's full phase (seed 0)", "",
              "Its fine-tuning uses scratch's rule (fresh AdamW, 50 warm-up steps, then lr 1e-3; "
              f"{'raw weights' if rule == 'raw' else 'EMA weights'}). Held-out on the "
              "curve's 1,000 triples; 'regained' = first full step back at or below the σ-stage value; 'worth' = "
              "first scratch step (seed 0) at or below FINE's value after A/3.", "",
              "| depth | width | after σ stage | first full eval (step) | highest in full phase | regained at | "
              "after A/3 | worth scratch steps |", "|---|---|---|---|---|---|---|---|"]
    for size in SIZES:
        own, ref = longest(recs, "fine", size), longest(scratch, "scratch", size)
        if own is None:
            lines.append(f"| {size[0]} | {size[1]} | – | – | – | – | – | – |")
            continue
        after, full = curve_at(own, 0), [c for c in own["curve"] if c["phase"] == "full"]
        back = next((c["step"] for c in full if c["heldout"] <= after), None)
        end = curve_at(own, FULL_STEPS)
        worth = None if ref is None else scratch_steps(ref, end)
        back_s = f"{back:,}" if back is not None else "never"
        worth_s = "–" if ref is None else f"{worth:,}" if worth is not None else f"> {ref['full_steps']:,}"
        lines.append(f"| {size[0]} | {size[1]} | {after:.4f} | {full[0]['heldout']:.4f} ({full[0]['step']:,}) | "
                     f"{max(c['heldout'] for c in full):.4f} | {back_s} | {end:.4f} | {worth_s} |")
    if rule != "raw":
        raw_fine = [r for r in read_runs(results_dir(PROFILES_BY_RULE["raw"]) / "runs.jsonl") if r["method"] == "fine"]
        raw_scratch = [r for r in read_runs(SIZE_TABLE) if r["method"] == "scratch" and r["dataset"] == prof.dataset]
        lines += ["", "## 5. What the rule changed: raw weights against the EMA, same runs otherwise", "",
                  "Held-out on 2,000 test triples, mean over the seeds both rules ran (raw: `paper_protocol/`, "
                  f"`{SIZE_TABLE.relative_to(ROOT)}`).", "",
                  f"| depth | width | FINE σ{s} + {FULL_STEPS:,} | scratch@{SCRATCH_A:,} | "
                  f"scratch@{SCRATCH_PRODUCT:,} |", "|---|---|---|---|---|"]
        for size in SIZES:
            cells = [_change(_by_seed(raw_fine, "fine", size, FULL_STEPS), _by_seed(recs, "fine", size, FULL_STEPS)),
                     _change(_by_seed(raw_scratch, "scratch", size, SCRATCH_A), _by_seed(scratch, "scratch", size, SCRATCH_A)),
                     _change(_by_seed(raw_scratch, "scratch", size, SCRATCH_PRODUCT),
                             _by_seed(scratch, "scratch", size, SCRATCH_PRODUCT))]
            lines.append(f"| {size[0]} | {size[1]} | " + " | ".join(cells) + " |")
    lines.append(f"\nRuns finished: FINE {len(recs)}, scratch {len(scratch)}.")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rule", choices=sorted(PROFILES_BY_RULE), default="ema",
                   help="the dense phase's weights: ema (the service's rule) or raw (the first table)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", action="append", default=None, metavar="GLOB",
                   help="only runs whose label matches, e.g. 'fine_d6_w128_s0_n6666' (repeatable)")
    p.add_argument("--stop-after", type=float, default=None, metavar="MINUTES")
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    if not a.report:
        torch.set_num_threads(a.threads)
        deadline = time.time() + 60 * a.stop_after if a.stop_after is not None else None
        try:
            run_profile(PROFILES_BY_RULE[a.rule], desc="paper protocol", only=a.only, deadline=deadline)
        except RunPaused as e:
            print(f"paper_protocol: {e}", file=sys.stderr)
    print(report(a.rule))


if __name__ == "__main__":
    main()
