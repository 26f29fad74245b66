"""Plain vs width-aware ancestry: does every offered width slice into a usable descendant?

For each ancestry and width: a depth-6 FINE descendant, held-out MSE right after assembly and
after 100 sigma steps (FD too), beside `scratch` trained 400 steps at the same size.

    python bench/width_aware.py --plain runs/snapshots/plain-1500 --aware runs/snapshots/wa-1500
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

from descendants import EvalConfig, Run, append, done_keys, fd_floor, train_run  # noqa: E402

from fine.data import load  # noqa: E402
from fine.formats import load_learngene  # noqa: E402

OUT = ROOT / "bench" / "results" / "width_aware"


def report(ancestries: dict[str, str]) -> str:
    recs = [json.loads(line) for line in (OUT / "runs.jsonl").read_text().splitlines() if line.strip()]
    floor = json.loads((OUT / "floor.json").read_text())
    lines = ["| width | initialisation | held-out MSE at init | held-out MSE after training | FD-FMNIST after |",
             "| --- | --- | --- | --- | --- |"]
    for w in sorted({r["width"] for r in recs}):
        for r in sorted((r for r in recs if r["width"] == w), key=lambda r: (r["method"], r["learngene"])):
            name = "scratch, 400 steps" if r["method"] == "scratch" else \
                f"{ancestries.get(r['learngene'], r['learngene'])} ancestry + {r['sigma_steps']} sigma steps"
            (step, m), = r["points"].items()
            fd = m.get("fd_fmnist", float("nan"))
            lines.append(f"| {w} | {name} | {r['curve'][0]['heldout']:.4f} | {m['heldout']:.4f} | {fd:.2f} |")
    lines.append(f"\nFloor (real train vs real test, n={floor['n']}): FD-FMNIST {floor['fd_fmnist']:.2f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--plain", type=Path, required=True, help="learngene dir of the plainly pre-trained ancestry")
    p.add_argument("--aware", type=Path, required=True, help="learngene dir of the width-aware ancestry")
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--sigma-steps", type=int, default=100)
    p.add_argument("--scratch-steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    lgs = {"plain": load_learngene(a.plain / "learngene.safetensors"),
           "width-aware": load_learngene(a.aware / "learngene.safetensors")}
    names = {lg.id: f"{k} ({lg.meta['steps']} steps)" for k, lg in lgs.items()}
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    ecfg = EvalConfig(curve_every=50)
    OUT.mkdir(parents=True, exist_ok=True)
    if not (OUT / "floor.json").exists():
        (OUT / "floor.json").write_text(json.dumps(fd_floor(train, test, "fashion-mnist", ecfg.fd_n) | {"n": ecfg.fd_n}))
    widths = lgs["width-aware"].meta["widths"]
    todo = []
    for w in widths:
        for lg in lgs.values():
            todo.append((Run("fine", a.depth, w, sigma_steps=a.sigma_steps, full_steps=0, fd_at=(0,), learngene=lg.id), lg))
        todo.append((Run("scratch", a.depth, w, full_steps=a.scratch_steps, fd_at=(a.scratch_steps,)), lgs["plain"]))
    done = done_keys(OUT / "runs.jsonl")
    for run, lg in tqdm([t for t in todo if t[0].key() not in done], desc="runs"):
        append(OUT / "runs.jsonl", train_run(run, lg, train, test, ecfg))
    md = report(names)
    (OUT / "table.md").write_text(f"Command: python bench/width_aware.py --plain {a.plain} --aware {a.aware}\n\n" + md)
    print(md)


if __name__ == "__main__":
    main()
