"""The embedded mode (`fine serve` with no settings): SQLite, local blobs, filesystem broker,
API and worker from one command. A subset of the distributed suite, plus process lifetime."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from safetensors.numpy import load as load_safetensors

from api_tests.conftest import TINY
from api_tests.harness import Service, embedded_service
from api_tests.helpers import npz_bytes


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, toy_learngene: Path) -> Iterator[Service]:
    with embedded_service(tmp_path_factory.mktemp("embedded"), toy_learngene, FINE_PARENT_EXIT_GRACE="3") as svc:
        yield svc


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_embedded_job_on_uploaded_dataset(embedded: Service) -> None:
    c = embedded.client
    assert c.get("/readyz").json()["checks"]["broker"].startswith("ok")
    ds = c.post("/v1/datasets", files={"file": ("four.npz", npz_bytes(n=48, side=8, classes=4, seed=3),
                                                "application/octet-stream")})
    assert ds.status_code == 201, ds.text
    r = c.post("/v1/jobs", json={**TINY, "dataset": f"{ds.json()['id']}:0-2", "hidden_size": 32},
               headers={"Idempotency-Key": "emb-1"})
    assert r.status_code == 202, r.text
    assert c.post("/v1/jobs", json={**TINY, "dataset": f"{ds.json()['id']}:0-2", "hidden_size": 32},
                  headers={"Idempotency-Key": "emb-1"}).json()["id"] == r.json()["id"]
    done = embedded.wait_final(r.json()["id"], timeout=180)
    assert done["status"] == "succeeded", (done, embedded.api.tail() if embedded.api else "")
    ckpt = c.get(f"/v1/checkpoints/{done['checkpoint_id']}").json()
    dense = c.get(f"/v1/checkpoints/{ckpt['id']}/file")
    sha = hashlib.sha256(dense.content).hexdigest()
    assert dense.headers["etag"] == f'"{sha}"'
    assert load_safetensors(dense.content)
    part = c.get(f"/v1/checkpoints/{ckpt['id']}/file", headers={"Range": "bytes=-100"})
    assert part.status_code == 206 and part.content == dense.content[-100:]
    bad = c.post("/v1/jobs", json={**TINY, "hidden_size": 96})
    assert bad.status_code == 422 and "at most 64" in bad.json()["detail"]


def test_embedded_cancel(embedded: Service) -> None:
    c = embedded.client
    job = c.post("/v1/jobs", json={**TINY, "sigma_steps": 20000, "seed": 41}).json()
    embedded.wait_job(job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] > 0, timeout=60)
    assert c.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert embedded.wait_final(job["id"], timeout=30)["status"] == "canceled"


def test_serve_starts_its_worker_again(embedded: Service) -> None:
    """A worker that exits while serve runs (here SIGKILL; a consumer watchdog's exit alike) is started again."""
    assert embedded.api is not None
    (old,) = children(embedded.api.pid)
    os.kill(old, signal.SIGKILL)
    end = time.monotonic() + 30
    while time.monotonic() < end and children(embedded.api.pid) in ([], [old]):
        time.sleep(0.2)
    assert children(embedded.api.pid) not in ([], [old]), embedded.api.tail()
    assert f"worker (pid {old}) exited with code -9: starting a new one" in embedded.api.tail(200)
    job = embedded.client.post("/v1/jobs", json={**TINY, "seed": 42}).json()
    assert embedded.wait_final(job["id"], timeout=180)["status"] == "succeeded"


def test_worker_dies_with_serve_even_mid_job(embedded: Service) -> None:
    """Killing `fine serve` ends its worker too, within the exit grace, although a job is running:
    Celery's warm shutdown alone would train on to the job's end."""
    assert embedded.api is not None
    c = embedded.client
    job = c.post("/v1/jobs", json={**TINY, "sigma_steps": 20000, "seed": 43}).json()
    embedded.wait_job(job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] > 0, timeout=60)
    parent = embedded.api.pid
    kids = children(parent)
    assert kids, "serve should have started a worker subprocess"
    os.kill(parent, signal.SIGKILL)
    end = time.monotonic() + float(embedded.env["FINE_PARENT_EXIT_GRACE"]) + 20
    while time.monotonic() < end and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not any(_alive(k) for k in kids), f"the worker outlived its parent:\n{embedded.api.tail()}"
    assert "parent process" in embedded.api.tail(200), embedded.api.tail()
    with pytest.raises(httpx.TransportError):
        httpx.get(embedded.base + "/healthz", timeout=2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
