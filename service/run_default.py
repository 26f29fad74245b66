"""`python -m service.run_default` (behind `make run`): start the embedded service, submit the
default job (depth 6, width 128, 300 sigma steps on Fashion-MNIST), show its progress, download
the checkpoint to ./out/ and stop the service; all through the HTTP client (client/), as a user would."""

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
from client.cli import ProgressBars

DEFAULT_JOB = {"depth": 6, "hidden_size": 128, "dataset": "fashion-mnist", "method": "fine", "sigma_steps": 300}


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
            raise SystemExit("no learngene set is registered: learngenes/default/learngene.safetensors is missing "
                             "(build one with `fine pretrain`, or register one with POST /v1/learngenes)")
        if job["hidden_size"] > lg["hidden_size"]:
            print(f"note: learngene {lg['id']} is {lg['hidden_size']} wide; using hidden_size {lg['hidden_size']}")
            job = {**job, "hidden_size": lg["hidden_size"]}
        job_id = client.submit(job)["id"]
        print(f"job {job_id}: depth {job['depth']}, width {job['hidden_size']}, {job['dataset']}, "
              f"learngene {lg['id']}")
        t0 = time.monotonic()
        bars = ProgressBars()
        try:
            status = client.wait(job_id, on_event=bars)
        finally:
            bars.close()
        print(f"job {status['status']} in {time.monotonic() - t0:.1f} s")
        if status["status"] != "succeeded":
            raise SystemExit(f"job {job_id} {status['status']}: {status.get('error')}")
        return _download(client, status["checkpoint_id"], out_dir)
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


def _download(client: Client, ckpt_id: str, out_dir: Path) -> Path:
    """Every file of the checkpoint but the diffusers zip, each verified against its sha256."""
    ckpt = client.checkpoint(ckpt_id)
    dest = out_dir / ckpt_id
    dest.mkdir(parents=True, exist_ok=True)
    for f in ckpt["files"]:
        if f["format"] != "diffusers":
            client.download(ckpt_id, dest, f["format"])
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in ckpt["metrics"].items() if isinstance(v, float))
    if metrics:
        print(f"metrics: {metrics}")
    return dest / "model.safetensors"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("out"))
    ap.add_argument("--depth", type=int, default=DEFAULT_JOB["depth"])
    ap.add_argument("--hidden-size", type=int, default=DEFAULT_JOB["hidden_size"])
    ap.add_argument("--dataset", default=DEFAULT_JOB["dataset"])
    ap.add_argument("--sigma-steps", type=int, default=DEFAULT_JOB["sigma_steps"])
    a = ap.parse_args(argv)
    job = {**DEFAULT_JOB, "depth": a.depth, "hidden_size": a.hidden_size, "dataset": a.dataset,
           "sigma_steps": a.sigma_steps}
    path = run(a.out, job)
    print(f"checkpoint: {path.resolve()}")


if __name__ == "__main__":
    main()
