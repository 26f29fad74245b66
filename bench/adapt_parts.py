"""Issue 16: which parts of the body the sigma stage should also train on a new domain, and what each costs.

For each target (a dataset with the learngene the service would build it from) the same descendant is
assembled and given the same sigma stage (the job's defaults: rate, warm-up, block biases, a label
table for new classes), once per set of extra body parts that train with sigma at their own rate
(fine.spec.ADAPT_LR_SCALE x sigma's); U and V stay frozen in every variant. Scratch at the same
number of full steps is the reference row. Per variant: held-out MSE right after assembly and after
the stage, seconds per step, and the parameters that train (what a stored descendant must keep
besides sigma). The service's rule (fine.pipeline.adaptation_parts) is marked in the table.

    python bench/adapt_parts.py                               # the targets below, depth 4, width 64, 200 steps
    python bench/adapt_parts.py --targets colour-mnist-5k=learngenes/cfmnist-v1/learngene/learngene.safetensors
    python bench/adapt_parts.py --report                      # table.md from results.jsonl only

Each run is appended to `<out>/results.jsonl` when it finishes; a run already there is skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fine.data import load  # noqa: E402
from fine.diffusion import Diffusion  # noqa: E402
from fine.formats import load_learngene  # noqa: E402
from fine.metrics import heldout_loss  # noqa: E402
from fine.pipeline import Hooks, adaptation_parts, build_descendant, dense_optim, new_task, train_descendant  # noqa: E402
from fine.spec import ADAPT_LR_SCALE, ADAPT_PARTS, DEFAULT_LEARNGENE, SIGMA_OPTIM, JobSpec  # noqa: E402

OUT = ROOT / "bench" / "results" / "adapt_parts"
# Body parts that may train with sigma (fine.training.BODY_PARTS); the y_embedder trains anyway on a new task.
VARIANTS: tuple[tuple[str, ...], ...] = ((), ("x_embedder",), ("final_layer",), ADAPT_PARTS,
                                         (*ADAPT_PARTS, "t_embedder"))
TARGETS = {"mnist-5k": DEFAULT_LEARNGENE,  # grey 28x28: the learngene's pixels, another content
           "colour-fashion-mnist": DEFAULT_LEARNGENE,  # 3 channels and 32x32 from a grey 28x28 learngene
           "colour-mnist-5k": DEFAULT_LEARNGENE}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def one_run(lg, lg_path: Path, dataset: str, parts: tuple[str, ...] | None, a: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    """parts None: scratch at the same steps."""
    train, test = load(dataset, "train"), load(dataset, "test")
    method = "scratch" if parts is None else "fine"
    spec = JobSpec(depth=a.depth, hidden_size=a.width, dataset=dataset, method=method, seed=a.seed,
                   sigma_steps=a.steps if method == "fine" else 0, finetune_steps=0 if method == "fine" else a.steps,
                   subset_size=a.subset, batch_size=a.batch_size)
    model = build_descendant(lg.model, spec, train)
    at_init = heldout_loss(model, Diffusion(), test, n=a.test, seed=0)
    counted: list[int] = []

    def count(phase: str, step: int, m: torch.nn.Module) -> None:
        if not counted:  # the first step of the (only) phase: what that phase trains
            counted.append(trainable(m))

    timings: dict[str, float] = {}
    model = train_descendant(model, train.subset(a.subset, seed=a.seed), spec, train_labels=new_task(lg, train, dataset),
                             train_parts=parts or (), hooks=Hooks(on_step=count), timings=timings,
                             # the committed table measured scratch's raw weights (before the EMA rule)
                             finetune_optim=replace(dense_optim(a.batch_size), ema=0.0))
    seconds = timings["sigma" if method == "fine" else "finetune"]
    after = heldout_loss(model, Diffusion(), test, n=a.test, seed=0)
    return {"dataset": dataset, "learngene": lg.meta.get("id") or lg_path.parent.name,
            "learngene_steps": lg.meta.get("steps"), "learngene_path": _rel(lg_path),
            "method": method, "parts": list(parts) if parts is not None else None,
            "service_rule": parts is not None and tuple(parts) == adaptation_parts(lg.cfg, train),
            "depth": a.depth, "width": a.width, "steps": a.steps, "seed": a.seed,
            "heldout_init": round(at_init, 5), "heldout_after": round(after, 5),
            "s_per_step": round(seconds / a.steps, 4),
            "trainable_params": counted[0], "total_params": sum(
                p.numel() for p in model.parameters())}


def _rel(path: Path) -> str:
    """A path as committed results name it: relative to the checkout where it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _key(r: dict) -> tuple:
    return (r["dataset"], r["learngene_path"], r["method"], tuple(r["parts"] or ()), r["depth"], r["width"], r["steps"],
            r["seed"])


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def report(out: Path, command: str) -> str:
    rows = read(out / "results.jsonl")
    lines = ["# Which body parts train with σ on a new domain (issue 16)", "", f"Command: `{command}`", "",
             f"Same descendant, same σ stage (job defaults: σ lr {SIGMA_OPTIM.lr:g} with {SIGMA_OPTIM.warmup} warm-up "
             "steps, block biases, a new label table where the classes are new), once per set of extra body parts "
             f"trained with σ at {ADAPT_LR_SCALE:g} × σ's rate; U and V frozen in every variant. Scratch = DiT's "
             "init, the same number of full steps. Held-out MSE on the first test images (fixed t and noise). "
             "`trainable` = parameters the stage trains (what a stored descendant keeps besides the learngene). "
             "◀ = the service's rule (`fine.pipeline.adaptation_parts`).", ""]
    for (dataset, lg_name), group in _groups(rows).items():
        first = group[0]
        lines += [f"## {dataset} from `{lg_name}` ({first.get('learngene_steps')} steps; depth {first['depth']}, "
                  f"width {first['width']}, {first['steps']} training steps)",
                  "", "| variant | at assembly | after | vs scratch | s / step | trainable params |", "|---|---|---|---|---|---|"]
        scratch = next((r for r in group if r["method"] == "scratch"), None)
        for r in group:
            name = "scratch" if r["method"] == "scratch" else "σ + " + (", ".join(r["parts"]) or "nothing")
            mark = " ◀" if r["service_rule"] else ""
            ratio = f"{r['heldout_after'] / scratch['heldout_after']:.2f}x" if scratch and r is not scratch else ""
            lines.append(f"| {name}{mark} | {r['heldout_init']:.4f} | {r['heldout_after']:.4f} | {ratio} | "
                         f"{r['s_per_step']:.3f} | {r['trainable_params']:,} |")
        lines.append("")
    return "\n".join(lines)


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["dataset"], r["learngene"]), []).append(r)
    for group in out.values():
        group.sort(key=lambda r: (r["method"] == "scratch", len(r["parts"] or ()), r["parts"] or []))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", default=[f"{k}={v}" for k, v in TARGETS.items()],
                   help="DATASET=LEARNGENE_PATH pairs")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=JobSpec.model_fields["batch_size"].default)
    p.add_argument("--subset", type=int, default=JobSpec.model_fields["subset_size"].default)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--report", action="store_true")
    a = p.parse_args(argv)
    command = "python bench/adapt_parts.py" + ("" if argv is None else " " + " ".join(argv))
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.report:
        torch.set_num_threads(a.threads)
        done = {_key(r) for r in read(a.out / "results.jsonl")}
        warm = False  # a process's first steps pay one-time set-up: a throwaway run first, so s / step is fair
        for target in a.targets:
            dataset, _, path = target.partition("=")
            lg_path = Path(path)
            lg_path = lg_path if lg_path.is_absolute() else ROOT / lg_path
            lg = load_learngene(lg_path)
            for parts in (*VARIANTS, None):
                probe = {"dataset": dataset, "learngene_path": _rel(lg_path), "method": "scratch" if parts is None else "fine",
                         "parts": list(parts) if parts is not None else None, "depth": a.depth, "width": a.width,
                         "steps": a.steps, "seed": a.seed}
                if _key(probe) in done:
                    continue
                if not warm:
                    one_run(lg, lg_path, dataset, (), argparse.Namespace(**{**vars(a), "steps": 2, "test": 8}))
                    warm = True
                rec = one_run(lg, lg_path, dataset, parts, a)
                with open(a.out / "results.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{dataset} {rec['method']} {rec['parts']}: {rec['heldout_init']:.4f} -> {rec['heldout_after']:.4f} "
                      f"({rec['s_per_step']:.3f} s/step)", flush=True)
    text = report(a.out, command)
    (a.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
