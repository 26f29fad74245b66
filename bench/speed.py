"""Seconds per step, achieved GFLOP/s and peak memory: dense training, sigma stage, sampling.

Each case runs in its own subprocess so its peak resident memory is its own. The plain fp32
matmul rate is measured in the same run, as the yardstick.

    python bench/speed.py --out bench/results/speed.json [--depth 6 --width 128 --batch 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fine.assembly import assemble  # noqa: E402
from fine.config import DiTConfig  # noqa: E402
from fine.diffusion import Diffusion  # noqa: E402
from fine.model import DiT  # noqa: E402
from fine.training import SubnetLoss, default_widths  # noqa: E402


def _timed(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def matmul_rate(n: int, repeats: int, dtype: torch.dtype = torch.float32) -> dict:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    times = _timed(lambda: a @ b, repeats)
    case = "matmul" if dtype == torch.float32 else "matmul_bf16"
    return {"case": case, "n": n, "s": statistics.median(times), "gflop": 2 * n**3 / 1e9}


def model_for(case: str, depth: int, width: int, rank: int) -> DiT:
    if case == "dense":
        return DiT(DiTConfig(depth=depth, hidden_size=width, rank=None))
    anc = DiT(DiTConfig(depth=depth, hidden_size=width, rank=rank))
    return assemble(anc, depth, width, "fine")


def step_case(case: str, depth: int, width: int, rank: int, batch: int, repeats: int,
              compile_: bool = False, precision: str = "fp32") -> dict:
    torch.manual_seed(0)
    model = model_for("dense" if case == "dense" else "fine", depth, width, rank)
    if case == "ancestry":  # one width-aware pre-training step of a factored ancestry (all widths)
        sandwich = SubnetLoss(model, default_widths(model.cfg))
    diffusion = Diffusion()
    net = torch.compile(model) if compile_ else model
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    if case in ("sample", "sample_dense"):
        model.eval()
        if case == "sample_dense":  # materialise every factored weight once, before sampling
            model = model.materialize().eval()
            net = torch.compile(model) if compile_ else model

        def step() -> None:
            with torch.no_grad(), cast:  # one DDIM step with classifier-free guidance = 2 forwards
                diffusion.guided_eps(net, x, torch.full((batch,), 500), y, 2.0, 10)

    else:
        if case == "sigma":
            for p in model.parameters():
                p.requires_grad_(False)
            params = model.sigma_parameters() + model.block_bias_parameters()
            for p in params:
                p.requires_grad_(True)
        else:
            params = list(model.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4)
        g = torch.Generator().manual_seed(0)

        def step() -> None:
            with cast:
                loss = sandwich(x, y, g)[0] if case == "ancestry" else diffusion.loss(net, x, y, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    if compile_:
        t = time.perf_counter()
        step()  # compile outside the timed steps; FLOPs are counted on the eager model
        compile_s = time.perf_counter() - t
        net_compiled, net = net, model
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    if compile_:
        net = net_compiled
    times = _timed(step, repeats)
    return {
        "case": case, "depth": depth, "width": width, "rank": rank if case != "dense" else None, "batch": batch,
        "compile": compile_, "precision": precision, **({"compile_s": compile_s} if compile_ else {}),
        "s": statistics.median(times), "s_min": min(times), "gflop": flops / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def paired(depth: int, width: int, rank: int, batch: int, repeats: int, compile_: bool) -> dict:
    """Dense and sigma-stage steps alternated in one process: their time ratio is robust to machine drift."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    steps = {}
    for case in ("dense", "sigma"):
        model = model_for("dense" if case == "dense" else "fine", depth, width, rank)
        if case == "sigma":
            for p in model.parameters():
                p.requires_grad_(False)
            for p in model.sigma_parameters() + model.block_bias_parameters():
                p.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        net = torch.compile(model) if compile_ else model
        gen = torch.Generator().manual_seed(0)

        def step(net=net, opt=opt, g=gen) -> None:
            loss = Diffusion().loss(net, x, y, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(2):
            step()
        steps[case] = step
    times: dict[str, list[float]] = {"dense": [], "sigma": []}
    for _ in range(repeats):
        for case, step in steps.items():
            t = time.perf_counter()
            step()
            times[case].append(time.perf_counter() - t)
    ratios = [s / d for s, d in zip(times["sigma"], times["dense"], strict=True)]
    return {"case": "pair", "depth": depth, "width": width, "rank": rank, "batch": batch, "compile": compile_,
            "s": statistics.median(times["sigma"]), "dense_s": statistics.median(times["dense"]),
            "sigma_over_dense": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios), "gflop": 0.0}


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.case == "pair":
        out = paired(args.depth, args.width, args.rank, args.batch, args.repeats, args.compile)
    elif args.case in ("matmul", "matmul_bf16"):
        out = matmul_rate(args.matmul_n, args.repeats, torch.float32 if args.case == "matmul" else torch.bfloat16)
    else:
        out = step_case(args.case, args.depth, args.width, args.rank, args.batch, args.repeats,
                        compile_=args.compile, precision=args.precision)
    out["gflops"] = out["gflop"] / out["s"]
    out["threads"] = args.threads
    print(json.dumps(out))


def summarize(directory: Path) -> str:
    """One Markdown row per (attempt, case) from the JSON files of bench/speed_attempts.sh."""
    lines = ["| attempt | case | depth | rank | batch | threads | s / step | GFLOP/s | compile s | peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime):
        for r in json.loads(path.read_text())["rows"]:
            if r["case"] == "pair":
                lines.append(f"| {path.stem} | sigma/dense, paired: {r['sigma_over_dense']:.2f} (range {r['ratio_min']:.2f}-"
                             f"{r['ratio_max']:.2f}) | {r['depth']} | {r['rank']} | {r['batch']} | {r['threads']} "
                             f"| {r['s']:.3f} / {r['dense_s']:.3f} | | | |")
                continue
            lines.append(f"| {path.stem} | {r['case']} | {r.get('depth', '')} | {r.get('rank') or ''} | {r.get('batch', '')} "
                         f"| {r['threads']} | {r['s']:.3f} | {r['gflops']:.1f} | {r.get('compile_s', 0):.0f} "
                         f"| {r.get('peak_rss_mb', 0):.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--summarize", type=Path, default=None, help="print the table of a directory of results")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--rank", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--matmul-n", type=int, default=1024)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 = CPU autocast")
    p.add_argument("--cases", default="matmul,dense,sigma,sample")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "speed.json")
    args = p.parse_args()
    if args.summarize:
        return print(summarize(args.summarize))
    if args.case:
        return child(args)
    rows = []
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--case", case, "--depth", str(args.depth), "--width", str(args.width),
               "--rank", str(args.rank), "--batch", str(args.batch), "--repeats", str(args.repeats),
               "--threads", str(args.threads), "--matmul-n", str(args.matmul_n), "--precision", args.precision]
        cmd += ["--compile"] if args.compile else []
        row = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['case']:>12}: {row['s'] * 1000:8.1f} ms  {row['gflops']:6.1f} GFLOP/s"
              + (f"  peak {row['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in row else "")
              + (f"  sigma/dense {row['sigma_over_dense']:.2f} [{row['ratio_min']:.2f}, {row['ratio_max']:.2f}]"
                 if row["case"] == "pair" else ""))
    result = {
        "command": "python bench/speed.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "rows": rows,
    }
    by = {r["case"]: r for r in rows}
    if {"sigma", "dense", "matmul"} <= by.keys():
        result["sigma_over_dense_time"] = by["sigma"]["s"] / by["dense"]["s"]
        result["dense_gflops_over_matmul"] = by["dense"]["gflops"] / by["matmul"]["gflops"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if "sigma_over_dense_time" in result:
        print(f"sigma/dense time {result['sigma_over_dense_time']:.2f}; dense at "
              f"{100 * result['dense_gflops_over_matmul']:.0f}% of the matmul rate -> {args.out}")


if __name__ == "__main__":
    main()
