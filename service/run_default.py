"""`python -m service.run_default` (behind `make run`): start the embedded service, submit the
default job (depth 6, width 128 on Fashion-MNIST; every other field the job spec's default), show its progress, download
the checkpoint to ./out/ as soon as it is downloadable, then wait for its evaluation and download the
metrics and sample grid, saying how many seconds after the POST each arrived; then stop the service.
All through the HTTP client (client/), as a user would."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from client import ApiError, Client
from client.api import FINAL
from client.cli import ProgressBars
from fine.spec import DEFAULT_LEARNGENE

DEFAULT_JOB = {"depth": 6, "hidden_size": 128, "dataset": "fashion-mnist"}  # the rest: fine.spec.JobSpec's defaults
MODEL_FILES = ("dense", "factored", "config")  # downloadable as soon as the job succeeded
PHASES = ("queued_s", "load_s", "assemble_s", "sigma_s", "finetune_s", "save_s", "evaluate_s", "checkpoint_s",
          "metrics_s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int) -> subprocess.Popen[bytes]:
    code = f"from service.cli import serve; serve(api_only=False, host='127.0.0.1', port={port})"
    log = open(Path(os.environ.get("FINE_HOME", "var")) / "serve.log", "ab")
    return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)


def admin_key() -> str:
    """The embedded service's local admin key ($FINE_HOME/admin.key, written on its first start)."""
    path = Path(os.environ.get("FINE_HOME", "var")) / "admin.key"
    try:
        return path.read_text().strip()
    except OSError as e:
        raise SystemExit(f"cannot read the admin key {path} ({e}); the embedded service writes it on first start") from None


def _wait_ready(client: Client, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with code {proc.returncode}; see var/serve.log")
        try:
            if client.http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the service was not ready after {timeout:.0f} s; see var/serve.log")


def run(out_dir: Path, job: dict) -> Path:
    Path(os.environ.get("FINE_HOME", "var")).mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = _start(port)
    client = Client(f"http://127.0.0.1:{port}", timeout=60)
    try:
        print(f"starting the embedded service on http://127.0.0.1:{port} (logs: var/serve.log) ...")
        _wait_ready(client, proc)
        client.http.headers["Authorization"] = f"Bearer {admin_key()}"
        learngenes = client.learngenes()
        lg = next((x for x in learngenes if "default" in x.get("aliases", [])), None)
        if lg is None:
            raise SystemExit(f"no learngene set is registered: {DEFAULT_LEARNGENE} is missing "
                             "(build one with `fine pretrain`, or register one with POST /v1/learngenes)")
        if job["hidden_size"] > lg["hidden_size"]:
            print(f"note: learngene {lg['id']} is {lg['hidden_size']} wide; using hidden_size {lg['hidden_size']}")
            job = {**job, "hidden_size": lg["hidden_size"]}
        t0 = time.monotonic()
        job_id = client.submit(job)["id"]
        print(f"job {job_id}: depth {job['depth']}, width {job['hidden_size']}, {job['dataset']}, "
              f"learngene {lg['id']}")
        bars = ProgressBars()
        path, done = None, None
        try:
            for event in client.events(job_id):  # one stream: the checkpoint first, its evaluation after
                bars(event)
                d = event.data
                if event.event == "status" and d["status"] in FINAL:
                    if d["status"] != "succeeded":
                        raise SystemExit(f"job {job_id} {d['status']}: {d.get('error')}")
                    print(f"checkpoint {d['checkpoint_id']} downloadable {time.monotonic() - t0:.1f} s after the "
                          "POST (metrics pending)")
                    path = _download(client, d["checkpoint_id"], out_dir, MODEL_FILES)
                    print(f"checkpoint downloaded to {path.parent} {time.monotonic() - t0:.1f} s after the POST")
                elif event.event == "end":
                    done = d
        finally:
            bars.close()
        if path is None or done is None:
            raise SystemExit(f"the event stream of {job_id} ended early; see GET /v1/jobs/{job_id}")
        print(f"metrics {done['metrics_status']} {time.monotonic() - t0:.1f} s after the POST")
        ckpt = client.checkpoint(done["checkpoint_id"])
        if ckpt["metrics_status"] != "ready":
            print(f"the evaluation did not finish ({ckpt['metrics_status']}: {ckpt.get('metrics_error')}); "
                  "the checkpoint is complete without it")
        _download(client, ckpt["id"], out_dir, None)
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in ckpt["metrics"].items() if isinstance(v, float))
        if metrics:
            print(f"metrics: {metrics}")
        timings = client.job(job_id)["timings"]
        shown = ", ".join(f"{k} {timings[k]:.1f}" for k in PHASES if k in timings)
        print(f"seconds per phase: {shown}")
        return path
    except ApiError as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _download(client: Client, ckpt_id: str, out_dir: Path, formats: tuple[str, ...] | None) -> Path:
    """The checkpoint's files of these formats (None: every file but the diffusers zip), each verified
    against its sha256; returns the path of its model.safetensors."""
    ckpt = client.checkpoint(ckpt_id)
    dest = out_dir / ckpt_id
    dest.mkdir(parents=True, exist_ok=True)
    for f in ckpt["files"]:
        if f["format"] != "diffusers" and (formats is None or f["format"] in formats):
            client.download(ckpt_id, dest, f["format"])
    return dest / "model.safetensors"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("out"))
    ap.add_argument("--depth", type=int, default=DEFAULT_JOB["depth"])
    ap.add_argument("--hidden-size", type=int, default=DEFAULT_JOB["hidden_size"])
    ap.add_argument("--dataset", default=DEFAULT_JOB["dataset"])
    ap.add_argument("--sigma-steps", type=int, default=None, help="default: the job spec's")
    a = ap.parse_args(argv)
    job = {**DEFAULT_JOB, "depth": a.depth, "hidden_size": a.hidden_size, "dataset": a.dataset}
    if a.sigma_steps is not None:
        job["sigma_steps"] = a.sigma_steps
    path = run(a.out, job)
    print(f"checkpoint: {path.resolve()}")


if __name__ == "__main__":
    main()
