"""Issue 4 savings: training compute and storage for N sizes, FINE vs training each from scratch.

    python bench/savings.py --runs bench/results/issue2/runs.jsonl [--runs bench/results/size_table/runs.jsonl]

Accounting (written into bench/results/savings.md next to the numbers):
- Target quality for a size = FINE's held-out MSE at the end of its run (sigma stage + K full
  steps). Scratch cost = the first step of the scratch curve (same size, same data, seed 0) at or
  below that loss; a scratch run that never gets there counts as "more than its budget".
- Steps are converted to compute with the FLOPs of one training step at batch 64 counted by
  `torch.utils.flop_counter` on that size (sigma-stage steps are counted at their own FLOPs);
  FINE's total includes the ancestry's pre-training once (width-aware sandwich steps, counted
  with the same counter), shared by all N sizes.
- Bytes are files actually written with `fine.formats`: N dense checkpoints vs one learngene
  plus N factored checkpoints (sigma, biases, embeddings and final layer per size).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from descendants import curve_at, longest, read_runs, scratch_steps  # noqa: E402

from fine.assembly import assemble  # noqa: E402
from fine.diffusion import Diffusion  # noqa: E402
from fine.formats import load_learngene, save_dense, save_factored  # noqa: E402
from fine.spec import DEFAULT_LEARNGENE  # noqa: E402
from fine.training import SubnetLoss  # noqa: E402


def step_gflop(model, loss_of) -> float:
    """FLOPs of one forward + backward at batch 64."""
    x, y = torch.randn(64, model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size), torch.randint(0, 10, (64,))
    g = torch.Generator().manual_seed(0)
    with FlopCounterMode(display=False) as c:
        loss_of(x, y, g).backward()
    model.zero_grad(set_to_none=True)
    return c.get_total_flops() / 1e9


def sigma_step_gflop(model) -> float:
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.sigma_parameters() + model.block_bias_parameters():
        p.requires_grad_(True)
    try:
        return step_gflop(model, lambda x, y, g: Diffusion().loss(model, x, y, generator=g))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def fine_target(fine: dict, k: int | None) -> tuple[int, float]:
    """(full steps, held-out on the curve) of a FINE run at budget K (None: the end of the run)."""
    if k is None:
        return fine["full_steps"], fine["heldout"]
    value = curve_at(fine, k)
    if value is None:
        raise SystemExit(f"error: no curve point at K = {k} full steps in the FINE run d{fine['depth']} w{fine['width']}")
    return k, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, action="append", required=True)
    p.add_argument("--learngene", type=Path, default=ROOT / DEFAULT_LEARNGENE)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "savings.md")
    p.add_argument("--k", type=int, default=None,
                   help="FINE's budget: the target is its curve at sigma stage + K full steps (default: the run's end)")
    a = p.parse_args()
    torch.set_num_threads(1)
    lg = load_learngene(a.learngene)
    meta = json.loads((a.learngene.parent / "config.json").read_text())
    recs = read_runs(*a.runs)
    recs = [r for r in recs if r["seed"] == 0 and r["dataset"] == "fashion-mnist" and r.get("learngene", "") in ("", lg.id)]

    anc = lg.model
    wa = SubnetLoss(anc, meta.get("widths") or [anc.cfg.hidden_size])
    anc_step = step_gflop(anc, lambda x, y, g: wa(x, y, g)[0])
    anc_steps = int(meta.get("steps", 0))
    rows, fine_total, scratch_total, dense_bytes, factored_bytes = [], 0.0, 0.0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for depth, width in sorted({(r["depth"], r["width"]) for r in recs}):
            fine, scratch = longest(recs, "fine", (depth, width)), longest(recs, "scratch", (depth, width))
            if fine is None or scratch is None:
                continue
            model = assemble(lg.model, depth, width, "fine")
            g_sigma = sigma_step_gflop(model)
            dense = model.materialize()
            g_dense = step_gflop(dense, lambda x, y, g, m=dense: Diffusion().loss(m, x, y, generator=g))
            k, target = fine_target(fine, a.k)
            hit = scratch_steps(scratch, target)
            fine_cost = fine["sigma_steps"] * g_sigma + k * g_dense
            scratch_cost = (hit if hit is not None else scratch["full_steps"]) * g_dense
            d = Path(tmp) / f"d{depth}w{width}"
            dense_b = _size(save_dense, d / "dense", dense)
            fact_b = _size_factored(d / "factored.safetensors", model, lg)
            rows.append((depth, width, fine | {"full_steps": k}, target, hit, scratch, g_sigma, g_dense, fine_cost,
                         scratch_cost, dense_b, fact_b))
            fine_total += fine_cost
            scratch_total += scratch_cost
            dense_bytes += dense_b
            factored_bytes += fact_b
    lg_bytes = a.learngene.stat().st_size
    n = len(rows)
    anc_cost = anc_steps * anc_step
    lines = ["# Savings: N sizes from one learngene vs N trainings from scratch", "",
             f"Command: `python bench/savings.py {' '.join(sys.argv[1:])}`", "",
             *[line for line in (__doc__ or "").splitlines()[4:15]], "",
             "| depth | width | FINE budget | target held-out (FINE) | scratch steps to reach it | GFLOP/step sigma / dense "
             "| FINE TFLOP | scratch TFLOP | dense ckpt bytes | factored ckpt bytes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for depth, width, fine, target, hit, scratch, gs, gd, fc, sc, db, fb in rows:
        reach = str(hit) if hit is not None else f"> {scratch['full_steps']} (counted as {scratch['full_steps']})"
        lines.append(f"| {depth} | {width} | σ{fine['sigma_steps']} + {fine['full_steps']} | {target:.4f} | {reach} "
                     f"| {gs:.1f} / {gd:.1f} | {fc / 1e3:.1f} | {sc / 1e3:.1f} | {db:,} | {fb:,} |")
    lines += ["",
              f"Ancestry pre-training (paid once): {anc_steps} width-aware steps x {anc_step:.1f} GFLOP "
              f"= {anc_cost / 1e3:.1f} TFLOP.",
              "",
              f"**Compute for these N = {n} sizes**: FINE {fine_total / 1e3:.1f} TFLOP for the descendants "
              f"+ {anc_cost / 1e3:.1f} for the ancestry = {(fine_total + anc_cost) / 1e3:.1f} TFLOP; scratch "
              f"{scratch_total / 1e3:.1f} TFLOP. Ratio scratch / FINE: {scratch_total / fine_total:.2f}x excluding the "
              f"ancestry, {scratch_total / (fine_total + anc_cost):.2f}x including it. Steps: FINE "
              f"{sum(r[2]['sigma_steps'] + r[2]['full_steps'] for r in rows)} vs scratch "
              f"{sum((r[4] if r[4] is not None else r[5]['full_steps']) for r in rows)}. "
              + (f"At the average saving per size ({(scratch_total - fine_total) / n / 1e3:.1f} TFLOP) the ancestry pays "
                 f"for itself from N = {anc_cost / ((scratch_total - fine_total) / n):.0f} sizes."
                 if scratch_total > fine_total else "FINE saves no compute per size here."),
              "",
              f"**Storage for these N = {n} sizes**: dense {dense_bytes:,} B; learngene {lg_bytes:,} B + factored "
              f"{factored_bytes:,} B = {lg_bytes + factored_bytes:,} B; ratio {dense_bytes / (lg_bytes + factored_bytes):.2f}x "
              f"(the learngene is paid once, so the ratio grows with N: per extra size "
              f"{dense_bytes / max(1, factored_bytes):.1f}x)."]
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _size(save, path: Path, model) -> int:
    save(path, model, {})
    return (path / "model.safetensors").stat().st_size


def _size_factored(path: Path, model, lg) -> int:
    save_factored(path, model, lg, {})
    return path.stat().st_size


if __name__ == "__main__":
    main()
