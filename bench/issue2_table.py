"""Issue 2 measurement: FINE (sigma 300 on 5k images + 500 full steps) vs scratch (500, 5000 steps).

    python bench/issue2_table.py --methods scratch,fine [--shard 0/2] [--learngene PATH]
    python bench/issue2_table.py --report          # writes bench/results/issue2/table.md from runs.jsonl

Sizes: depths {2, 4, 6} at the ancestry's width and widths {64, 128} at depth 6, Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from descendants import EvalConfig, Run, append, done_keys, fd_floor, read_runs, train_run  # noqa: E402

from fine.data import load  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.spec import DEFAULT_LEARNGENE  # noqa: E402

OUT = ROOT / "bench" / "results" / "issue2"
SIZES = [(2, 128), (4, 128), (6, 128), (6, 64)]


def runs(methods: list[str], lg_id: str) -> list[Run]:
    out = []
    for depth, width in SIZES:
        if "scratch" in methods:
            out.append(Run("scratch", depth, width, full_steps=5000, fd_at=(500, 5000)))  # needs no learngene
        if "fine" in methods:
            out.append(Run("fine", depth, width, sigma_steps=300, full_steps=500, fd_at=(0, 500), learngene=lg_id))
    return out


def steps_to_match(run: dict, full_step: int, scratch: dict | None) -> str:
    """First scratch step whose held-out loss (training curve, same n) is at or below this point's."""
    if scratch is None:
        return "n/a"
    phase = "full" if full_step else "sigma"
    step = full_step if full_step else run["sigma_steps"]
    target = next(c["heldout"] for c in run["curve"] if c["phase"] == phase and c["step"] == step)
    hit = next((c["step"] for c in scratch["curve"] if c["phase"] == "full" and c["heldout"] <= target), None)
    return str(hit) if hit is not None else f"> {scratch['full_steps']}"


# What the committed table was made with (the learngene of that time; --report keeps the header with the rows).
HEADER = (
    "Command: `python bench/issue2_table.py --methods scratch,fine` (sharded with `--shard i/n`), then "
    "`python bench/issue2_table.py --report`. Learngene: learngenes/default (fmnist-f860cd2a68bc, 2,750 steps). "
    "All methods train on the same fixed 5,000-image subset. Held-out MSE: 2,000 fixed (x0, t, noise) test triples. "
    "FD/KID: 500 samples, DDIM 25 steps, guidance 1.5, features of fine/assets/classifier-fashion-mnist. "
    "\"scratch steps to match\": first 250-step checkpoint of the scratch run whose held-out MSE (n=1,000 curve) "
    "is at or below this point."
)


def report() -> None:
    recs = read_runs(OUT / "runs.jsonl")
    floor = json.loads((OUT / "floor.json").read_text()) if (OUT / "floor.json").exists() else {}
    lines = [HEADER, "",
             "| depth | width | method | training budget | held-out MSE | FD-FMNIST | KID-FMNIST | scratch steps to match |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for depth, width in SIZES:
        for r in sorted(recs, key=lambda r: r["method"]):
            if (r["depth"], r["width"]) != (depth, width):
                continue
            scratch = next((q for q in recs if q["method"] == "scratch" and (q["depth"], q["width"]) == (depth, width)), None)
            for step, m in sorted(r["points"].items(), key=lambda kv: int(kv[0])):
                budget = f"sigma {r['sigma_steps']} + {step} full" if r["method"] == "fine" else f"{step} full"
                match = steps_to_match(r, int(step), scratch) if r["method"] == "fine" else ""
                lines.append(f"| {depth} | {width} | {r['method']} | {budget} | {m['heldout']:.4f} "
                             f"| {m.get('fd_fmnist', float('nan')):.2f} | {m.get('kid_fmnist', float('nan')):.4f} | {match} |")
    if floor:
        fd, kid = floor.get("fd_fmnist", float("nan")), floor.get("kid_fmnist", float("nan"))
        lines.append(f"\nFloor (real train vs real test, n={floor.get('n')}): FD-FMNIST {fd:.2f}, KID-FMNIST {kid:.4f}")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default="scratch,fine")
    p.add_argument("--learngene", type=Path, default=ROOT / DEFAULT_LEARNGENE)
    p.add_argument("--shard", default="0/1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    if a.report:
        return report()
    torch.set_num_threads(a.threads)
    lg = load_learngene(a.learngene)
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    ecfg = EvalConfig()
    if not (OUT / "floor.json").exists():
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "floor.json").write_text(json.dumps(fd_floor(train, test, "fashion-mnist", ecfg.fd_n) | {"n": ecfg.fd_n}) + "\n")
    i, n = (int(v) for v in a.shard.split("/"))
    todo = [r for k, r in enumerate(runs(a.methods.split(","), lg.id)) if k % n == i]
    done = done_keys(OUT / "runs.jsonl")
    for run in tqdm([r for r in todo if r.key() not in done], desc="runs"):
        append(OUT / "runs.jsonl", train_run(run, lg, train, test, ecfg))


if __name__ == "__main__":
    main()
