"""Service measurements for issue 3 (not a test): API latency under a fixed request rate with the
worker idle, API and worker peak memory, POST-to-downloadable wall time, and bytes on disk of N
descendants stored factored vs dense.

    python -m api_tests.bench_service --mode embedded --learngene PATH [--descendants 10] [--out FILE]
    python -m api_tests.bench_service --mode redis-postgres ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from api_tests.harness import REDIS, Service, base_env, clear_redis_prefix, create_database, drop_database


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def fixed_rate(base: str, method: str, path: str, body: dict | None, rate: float, seconds: float) -> dict:
    lat: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            r = await client.request(method, path, json=body)
            lat.append((time.perf_counter() - t0) * 1000)
            if r.status_code >= 400:
                errors += 1

        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return {"requests": len(lat), "rate_per_s": rate, "errors": errors, "p50_ms": round(pct(lat, 0.5), 2),
            "p99_ms": round(pct(lat, 0.99), 2), "mean_ms": round(statistics.mean(lat), 2)}


def run_jobs(svc: Service, specs: list[dict]) -> list[dict]:
    out = []
    for spec in specs:
        t0 = time.perf_counter()
        job = svc.client.post("/v1/jobs", json=spec).json()
        done = svc.wait_final(job["id"], timeout=3600)
        assert done["status"] == "succeeded", done
        ckpt = svc.client.get(f"/v1/checkpoints/{done['checkpoint_id']}").json()
        dense = svc.client.get(f"/v1/checkpoints/{ckpt['id']}/file")
        assert dense.status_code == 200
        downloaded = time.perf_counter() - t0
        svc.wait_metrics(job["id"], timeout=3600)  # the evaluation runs after the checkpoint is downloadable
        ckpt = svc.client.get(f"/v1/checkpoints/{done['checkpoint_id']}").json()
        files = {f["format"]: f["bytes"] for f in ckpt["files"]}
        out.append({"spec": spec, "post_to_download_s": round(downloaded, 2), "bytes": files,
                    "metrics": ckpt["metrics"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=["embedded", "redis-postgres"], default="embedded")
    ap.add_argument("--learngene", type=Path, required=True)
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--descendants", type=int, default=10)
    ap.add_argument("--job", type=json.loads, default={"dataset": "digits", "hidden_size": 64, "sigma_steps": 50,
                                                       "subset_size": 256, "eval_images": 0, "sample_steps": 10})
    ap.add_argument("--depth", type=int, default=None, help="one depth for every descendant (default: varied)")
    ap.add_argument("--skip-latency", action="store_true", help="only run the descendant jobs")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="fine-bench-"))
    extra: dict[str, str] = {"FINE_TORCH_THREADS": "2"}
    db_name = prefix = None
    if a.mode == "redis-postgres":
        db_name, url = create_database()
        prefix = f"fine_bench_{secrets.token_hex(4)}:"
        extra.update(DATABASE_URL=url, REDIS_URL=REDIS, FINE_BROKER_KEY_PREFIX=prefix)
    svc = Service(base_env(home, a.learngene, **extra), home)
    result: dict[str, Any] = {"mode": a.mode, "machine": platform.platform(), "learngene": str(a.learngene)}
    try:
        svc.start_api()
        assert svc.api is not None
        lg = svc.client.get("/v1/learngenes").json()[0]
        result["learngene_id"], result["learngene_bytes"] = lg["id"], lg["bytes"]
        # 1. latency with the worker idle (no worker: jobs stay queued)
        if a.skip_latency:
            a.seconds = 0.5
        probe = svc.client.post("/v1/jobs", json={**a.job, "depth": 2}).json()
        result["get_job"] = asyncio.run(fixed_rate(svc.base, "GET", f"/v1/jobs/{probe['id']}", None, a.rate,
                                                   a.seconds))
        result["post_job"] = asyncio.run(fixed_rate(svc.base, "POST", "/v1/jobs", {**a.job, "depth": 2}, a.rate,
                                                    a.seconds))
        result["api_peak_rss_mb"] = round(peak_rss_mb(svc.api.pid), 1)
        for job in svc.client.get("/v1/jobs", params={"status": "queued", "limit": 100}).json()["items"]:
            svc.client.post(f"/v1/jobs/{job['id']}/cancel")
        while svc.client.get("/v1/jobs", params={"status": "queued", "limit": 1}).json()["items"]:
            for job in svc.client.get("/v1/jobs", params={"status": "queued", "limit": 100}).json()["items"]:
                svc.client.post(f"/v1/jobs/{job['id']}/cancel")
        # 2. descendants: wall time, bytes factored vs dense, worker memory
        worker = svc.start_worker()
        depths = [a.depth or 1 + i % max(1, lg["depth"] * 2) for i in range(a.descendants)]
        jobs = run_jobs(svc, [{**a.job, "depth": d, "seed": i} for i, d in enumerate(depths)])
        result["worker_peak_rss_mb"] = round(peak_rss_mb(worker.pid), 1)
        result["jobs"] = jobs
        dense = sum(j["bytes"]["dense"] for j in jobs)
        factored = sum(j["bytes"].get("factored", 0) for j in jobs)
        result["storage"] = {"descendants": len(jobs), "dense_bytes": dense, "factored_bytes": factored,
                             "factored_plus_learngene_bytes": factored + lg["bytes"],
                             "dense_over_factored": round(dense / max(1, factored + lg["bytes"]), 2)}
        result["api_peak_rss_mb_after_jobs"] = round(peak_rss_mb(svc.api.pid), 1)
    finally:
        svc.stop()
        if db_name:
            drop_database(db_name)
        if prefix:
            clear_redis_prefix(prefix)
        shutil.rmtree(home, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
