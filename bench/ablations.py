"""Issue 4 ablations of FINE's initialisation, measured right after the sigma stage.

    nohup python bench/ablations.py > logs/ablations.log &     # resumable
    python bench/ablations.py --report                          # bench/results/ablations/table.md

- sigma initialisation (the paper's four): trained (interpolated over depth from the ancestry:
  FINE's default), linear (least-squares line over depth, TLEG's), constant (each layer's mean),
  random (Gaussian with the trained sigma's spread); depths 2 and 6.
- rank of U/V: the learngene cut to its strongest 32 / 64 / 96 of 128 components
  (`fine.assembly.truncate_rank`), depth 6.
- sigma only vs sigma + block biases in the stage, depth 6.
Width (plain vs width-aware ancestry) is `bench/width_aware.py`; its table is linked from here.
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

OUT = ROOT / "bench" / "results" / "ablations"
DATASET = "fashion-mnist"
SIGMA_STEPS = 300


def planned(lg_id: str) -> list[tuple[str, str, Run]]:
    """(group, variant, run); the baseline (trained sigma, full rank, with biases) is shared."""
    base = {"method": "fine", "width": 128, "sigma_steps": SIGMA_STEPS, "full_steps": 0, "fd_at": (0,),
            "learngene": lg_id, "dataset": DATASET}
    out = []
    for depth in (6, 2):
        for init in ("interp", "linear", "constant", "random"):
            out.append(("sigma init", "trained" if init == "interp" else init, Run(depth=depth, sigma_init=init, **base)))
    for rank in (96, 64, 32):
        out.append(("rank", str(rank), Run(depth=6, rank=rank, **base)))
    out.append(("stage trains", "sigma only", Run(depth=6, train_bias=False, **base)))
    return out


def report(lg_id: str) -> None:
    recs = {Run.from_record(r).key(): r for r in read_runs(OUT / "runs.jsonl")}
    floor = json.loads((OUT / "floor.json").read_text())
    lines = ["# Ablations of FINE's initialisation (Fashion-MNIST, default learngene)", "",
             "Command: `python bench/ablations.py` (then `--report`). Width 128, seed 0, the sigma stage "
             f"({SIGMA_STEPS} steps, lr 3e-3, same 5,000-image subset) and no full training. Held-out MSE on "
             "2,000 fixed test triples; FD/KID on 500 samples (DDIM 25, guidance 1.5).", "",
             "| ablation | variant | depth | held-out at init | held-out after stage | FD-FMNIST | KID | s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = planned(lg_id)
    rows.insert(8, ("rank", "128 (full)", rows[0][2]))
    rows.append(("stage trains", "sigma + biases", rows[0][2]))
    for group, variant, run in rows:
        r = recs.get(run.key())
        if r is None:
            lines.append(f"| {group} | {variant} | {run.depth} | not run | | | | |")
            continue
        m = r["points"]["0"]
        lines.append(f"| {group} | {variant} | {run.depth} | {r['curve'][0]['heldout']:.4f} | {m['heldout']:.4f} "
                     f"| {m['fd_fmnist']:.1f} | {m['kid_fmnist']:.3f} | {r['seconds']:.0f} |")
    lines += ["", f"Floor (real vs real, n={floor['n']}): FD {floor['fd_fmnist']:.2f}.",
              "Width (plain vs width-aware ancestry): see `bench/results/width_aware/table.md`."]
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--learngene", type=Path, default=ROOT / DEFAULT_LEARNGENE)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shard", default="0/1")
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    lg = load_learngene(a.learngene)
    if a.report:
        return report(lg.id)
    torch.set_num_threads(a.threads)
    train, test = load(DATASET, "train"), load(DATASET, "test")
    ecfg = EvalConfig()
    if not (OUT / "floor.json").exists():
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "floor.json").write_text(json.dumps(fd_floor(train, test, DATASET, ecfg.fd_n) | {"n": ecfg.fd_n}) + "\n")
    i, n = (int(v) for v in a.shard.split("/"))
    done = done_keys(OUT / "runs.jsonl")
    todo = [run for k, (_, _, run) in enumerate(planned(lg.id)) if k % n == i and run.key() not in done]
    for run in tqdm(todo, desc="ablations"):
        append(OUT / "runs.jsonl", train_run(run, lg, train, test, ecfg))
    report(lg.id)


if __name__ == "__main__":
    main()
