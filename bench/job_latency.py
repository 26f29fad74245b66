"""Latency of the default job (what `make run` submits) as a user sees it, in one run together with the
machine's fp32 matmul rate: POST -> checkpoint downloadable (and downloaded), POST -> all metrics, and
the worker's seconds per phase (queue, load, assemble, sigma stage, save, evaluate), in the embedded
mode and in the Redis + PostgreSQL mode, `--repeats` jobs each on one fresh service (the first job of a
fresh worker with an empty cache is the cold one; the later ones show what the worker kept).

    python bench/job_latency.py --repeats 3 [--modes embedded,redis-postgres] [--note "machine quiet"]

Writes bench/results/job_latency/{table.md,results.json}. Goals (issue 17): <= 60 s to download and
<= 120 s to all metrics on 2 cores. Redis and PostgreSQL must answer (see api_tests/harness.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api_tests.harness import (  # noqa: E402
    REDIS,
    Service,
    base_env,
    clear_redis_prefix,
    create_database,
    drop_database,
    embedded_service,
)
from bench.speed import matmul_rate, step_case  # noqa: E402
from client import Client  # noqa: E402
from client.api import FINAL  # noqa: E402
from fine.formats import read_learngene_metadata  # noqa: E402
from fine.spec import DEFAULT_LEARNGENE, JobSpec  # noqa: E402
from service.run_default import DEFAULT_JOB  # noqa: E402

OUT = ROOT / "bench" / "results" / "job_latency"
PHASES = ("queued_s", "load_s", "assemble_s", "sigma_s", "finetune_s", "save_s", "evaluate_s")
GOALS = {"download_s": 60.0, "metrics_s": 120.0}


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def one_job(svc: Service, job: dict) -> dict:
    """Submit `job` and follow it: seconds from the POST to each milestone, the job's timings, the metrics."""
    out: dict = {}
    with Client(svc.base, svc.admin_key(), timeout=60) as c:
        t0 = time.monotonic()
        job_id = c.submit(job)["id"]
        out["post_s"] = time.monotonic() - t0
        ckpt_id = None
        for event in c.events(job_id):
            d = event.data
            if event.event == "status" and d.get("status") in FINAL:
                if d["status"] != "succeeded":
                    raise RuntimeError(f"job {job_id} {d['status']}: {d.get('error')}")
                out["checkpoint_s"] = time.monotonic() - t0
                ckpt_id = d["checkpoint_id"]
                with tempfile.TemporaryDirectory() as tmp:
                    got = c.download(ckpt_id, Path(tmp))
                out["download_s"] = time.monotonic() - t0
                out["dense_bytes"] = got.bytes
            elif event.event == "evaluation" and d["metrics_status"] not in ("running", "pending"):
                out["metrics_s"] = time.monotonic() - t0
                out["metrics_status"] = d["metrics_status"]
            elif event.event == "end":
                break
        final = c.job(job_id)
        ckpt = c.checkpoint(ckpt_id) if ckpt_id else {}
    out["job_id"] = job_id
    out["timings"] = final["timings"]
    out["metrics"] = {k: v for k, v in ckpt.get("metrics", {}).items() if isinstance(v, int | float | str)}
    return out


def run_mode(mode: str, learngene: Path, repeats: int, threads: int, job: dict) -> list[dict]:
    home = Path(tempfile.mkdtemp(prefix=f"job-latency-{mode}-"))
    # The service's own settings, not the test suite's: default heartbeats, the worker's default threads.
    extra = {"FINE_TORCH_THREADS": str(threads), "FINE_HEARTBEAT_INTERVAL": "1", "FINE_HEARTBEAT_TIMEOUT": "30",
             "FINE_REAPER_INTERVAL": "5", "FINE_DISPATCH_GRACE": "5", "FINE_MAX_ATTEMPTS": "3"}
    rows = []
    if mode == "embedded":
        with embedded_service(home, learngene, **extra) as svc:
            for i in range(repeats):
                rows.append({"mode": mode, "repeat": i + 1, **one_job(svc, {**job, "seed": i})})
                print(json.dumps(rows[-1]), flush=True)
        return rows
    name, url = create_database()
    prefix = f"fine_bench_{secrets.token_hex(4)}:"
    svc = Service(base_env(home, learngene, DATABASE_URL=url, REDIS_URL=REDIS, FINE_BROKER_KEY_PREFIX=prefix,
                           **extra), home)
    try:
        svc.start_api()
        svc.start_worker()
        for i in range(repeats):
            rows.append({"mode": mode, "repeat": i + 1, **one_job(svc, {**job, "seed": i})})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        svc.stop()
        clear_redis_prefix(prefix)
        drop_database(name)
    return rows


def sigma_rate(learngene: Path, spec: JobSpec, threads: int) -> dict:
    """FLOPs of one sigma-stage step of the default job's model (counted), for the job's achieved rate."""
    torch.set_num_threads(threads)
    rank = read_learngene_metadata(learngene)["config"]["rank"]
    return step_case("sigma", spec.depth, spec.hidden_size, rank, spec.batch_size, repeats=3)


def table(result: dict) -> str:
    mm = result["matmul"]
    lines = [
        "# Job latency: the default job, POST to download and to metrics",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']['cores']} cores, {result['machine']['platform']}, torch "
        f"{result['machine']['torch']}; fp32 matmul ({mm['n']}x{mm['n']}, {result['threads']} threads) "
        f"**{mm['gflops']:.1f} GFLOP/s** in this run. Worker threads: {result['threads']}.",
        "",
        f"Conditions: {result['note'] or 'none stated'}",
        "",
        f"Job: `{json.dumps(result['job'])}` (the rest JobSpec's defaults: {result['spec_defaults']})"
        + (" — **not the default job**" if result["job"] != DEFAULT_JOB else ": the default job (`make run`'s)."),
        "",
        "Seconds from the POST; the phases are the worker's own (GET /v1/jobs/{id} `timings`). "
        f"Goals: download <= {GOALS['download_s']:.0f} s, metrics <= {GOALS['metrics_s']:.0f} s.",
        "",
        "| mode | run | checkpoint downloadable | downloaded | all metrics | " + " | ".join(
            p.removesuffix("_s") for p in PHASES) + " | sigma GFLOP/s (% of matmul) | held-out | FD |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in PHASES) + " | --- | --- | --- |",
    ]
    flop = result["sigma_step"]["gflop"]
    steps = result["job"].get("sigma_steps", JobSpec.model_fields["sigma_steps"].default)
    for r in result["rows"]:
        t = r["timings"]
        rate = flop * steps / t["sigma_s"] if t.get("sigma_s") else float("nan")
        fd = next((v for k, v in r["metrics"].items() if k.startswith("fd_") and not k.endswith("_floor")), None)
        lines.append(
            f"| {r['mode']} | {r['repeat']}{' (cold)' if r['repeat'] == 1 else ''} | {r['checkpoint_s']:.1f} | "
            f"{r['download_s']:.1f} | {r.get('metrics_s', float('nan')):.1f} | "
            + " | ".join(f"{t[p]:.1f}" if p in t else "" for p in PHASES)
            + f" | {rate:.1f} ({100 * rate / mm['gflops']:.0f} %) | {r['metrics'].get('heldout_loss', float('nan')):.4f}"
            f" | {fd if fd is None else f'{fd:.1f}'} |")
    lines += ["", "Medians per mode:", ""]
    for mode in dict.fromkeys(r["mode"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        med = {k: statistics.median(r[k] for r in rows if k in r) for k in ("checkpoint_s", "download_s", "metrics_s")}
        verdict = ", ".join(f"{k.removesuffix('_s')} {'meets' if med[k] <= g else 'misses'} <= {g:.0f} s"
                            for k, g in GOALS.items())
        lines.append(f"- {mode}: checkpoint {med['checkpoint_s']:.1f} s, downloaded {med['download_s']:.1f} s, "
                     f"metrics {med['metrics_s']:.1f} s ({verdict})")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="embedded,redis-postgres")
    ap.add_argument("--learngene", type=Path, default=ROOT / DEFAULT_LEARNGENE)
    ap.add_argument("--threads", type=int, default=cores(), help="worker torch threads (default: the cores here, "
                    "what FINE_TORCH_THREADS defaults to for one worker)")
    ap.add_argument("--job", type=json.loads, default={}, help="fields to change in the default job (a smaller "
                    "proof run, e.g. '{\"sigma_steps\": 50}'); the table then says it is not the default job")
    ap.add_argument("--note", default="", help="the conditions of this run (e.g. what else ran)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    mm = matmul_rate(1024, 10)
    mm["gflops"] = mm["gflop"] / mm["s"]
    job = {**DEFAULT_JOB, **a.job}
    spec = JobSpec.model_validate(job)
    result = {
        "command": "python bench/job_latency.py " + " ".join(sys.argv[1:]),
        "machine": {"cores": cores(), "platform": platform.platform(), "torch": torch.__version__},
        "threads": a.threads, "note": a.note, "matmul": mm, "job": job,
        "spec_defaults": {k: getattr(spec, k) for k in ("subset_size", "batch_size", "eval_images", "sample_steps",
                                                         "sampler")},
        "sigma_step": sigma_rate(a.learngene, spec, a.threads),
        "rows": [],
    }
    for mode in a.modes.split(","):
        result["rows"] += run_mode(mode, a.learngene, a.repeats, a.threads, job)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (a.out / "table.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
