"""Checkpoint first, evaluation after (issue 17), on the distributed set-up (uvicorn + Celery workers +
Redis + PostgreSQL): the checkpoint is downloadable while its metrics are pending, the metrics arrive
after, a failed evaluation keeps the checkpoint, a worker killed during an evaluation leaves a checkpoint
that another worker re-evaluates, and a worker's second job on a dataset decodes nothing."""

from __future__ import annotations

import hashlib
import re
import signal
from pathlib import Path

from api_tests.conftest import TINY
from api_tests.harness import Service
from api_tests.helpers import npz_bytes
from client import Client

# Fashion-MNIST (28x28) has a feature classifier, so its metrics include FD; the toy learngene adapts to it.
FMNIST = {**TINY, "dataset": "fashion-mnist", "eval_images": 100, "sample_steps": 30}
WAIT = 300  # seconds, for a busy machine (quiet: each job here takes a few)


def worker_logs(service: Service) -> str:
    return "\n".join(w.log_path.read_text(errors="replace") for w in service.workers if w.log_path.exists())


def decodes(service: Service, label: str) -> int:
    return len(re.findall(rf"dataset cache miss: decoded {re.escape(label)} ", worker_logs(service)))


def test_checkpoint_is_downloadable_while_metrics_are_pending(service: Service) -> None:
    c = Client(service.base, service.admin_key())
    job = c.submit({**FMNIST, "seed": 401})
    stream = c.events(job["id"])
    for event in stream:
        if event.event == "status" and event.data["status"] == "succeeded":
            break
    # the moment the job succeeded: the model is downloadable, its metrics are still to come
    now = c.job(job["id"])
    assert now["status"] == "succeeded" and now["metrics_status"] in ("pending", "running"), now
    ckpt = c.checkpoint(now["checkpoint_id"])
    assert ckpt["metrics_status"] in ("pending", "running") and ckpt["metrics"] == {}
    formats = {f["format"]: f for f in ckpt["files"]}
    assert {"dense", "factored", "config"} <= set(formats) and "samples" not in formats
    dense = service.client.get(f"/v1/checkpoints/{ckpt['id']}/file")
    assert dense.status_code == 200 and hashlib.sha256(dense.content).hexdigest() == formats["dense"]["sha256"]
    assert service.client.get(f"/v1/checkpoints/{ckpt['id']}/samples.png").status_code == 409  # not drawn yet
    rest = list(stream)  # the same stream goes on: the evaluation, then the end
    kinds = [(e.event, e.data.get("metrics_status") or e.data.get("phase")) for e in rest]
    assert kinds[-2:] == [("evaluation", "ready"), ("end", "ready")], kinds
    assert ("progress", "eval") in kinds and kinds.index(("progress", "eval")) < kinds.index(("evaluation", "ready"))
    assert rest[-1].data["metrics_status"] == "ready"
    ready = c.checkpoint(ckpt["id"])
    assert ready["metrics_status"] == "ready" and ready["metrics_error"] is None
    assert {"heldout_loss", "fd_fmnist", "fd_fmnist_floor"} <= set(ready["metrics"]), ready["metrics"]
    files = {f["format"]: f for f in ready["files"]}
    assert files["dense"]["sha256"] == formats["dense"]["sha256"]  # the model file never changes
    png = service.client.get(f"/v1/checkpoints/{ckpt['id']}/samples.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    config = service.client.get(f"/v1/checkpoints/{ckpt['id']}/file?format=config").json()
    assert config["metrics"] == ready["metrics"] and ready["config"]["metrics"] == ready["metrics"]
    t = c.job(job["id"])["timings"]
    assert {"queued_s", "load_s", "assemble_s", "sigma_s", "save_s", "evaluate_s"} <= set(t)
    assert t["checkpoint_s"] < t["metrics_s"]


def test_a_second_job_on_a_dataset_decodes_nothing(service: Service) -> None:
    cache = service.home / "cache" / "datasets"
    done = service.wait_metrics(service.client.post("/v1/jobs", json={**FMNIST, "eval_images": 16,
                                                                     "sample_steps": 2, "seed": 402}).json()["id"],
                                timeout=WAIT)
    assert done["metrics_status"] == "ready", done
    assert decodes(service, "fashion-mnist-train") == 1  # the first job on it (this session) decoded it once
    files = sorted(cache.glob("fashion-mnist-train-*.images.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    hits = worker_logs(service).count("dataset cache hit: fashion-mnist-train")
    again = service.wait_metrics(service.client.post("/v1/jobs", json={**FMNIST, "eval_images": 16,
                                                                      "sample_steps": 2, "seed": 403}).json()["id"],
                                 timeout=WAIT)
    assert again["metrics_status"] == "ready", again
    assert decodes(service, "fashion-mnist-train") == 1 and files[0].stat().st_mtime_ns == stamp
    assert worker_logs(service).count("dataset cache hit: fashion-mnist-train") == hits + 1
    assert "learngene" in worker_logs(service) and "already loaded" in worker_logs(service)


def test_a_failed_evaluation_keeps_the_checkpoint(service: Service) -> None:
    c = service.client
    # one image per class: the fixed 80/20 split leaves no test image, so training works and evaluation cannot
    ds = c.post("/v1/datasets", files={"file": ("eight.npz", npz_bytes(n=8, side=8, classes=8, seed=12),
                                                "application/octet-stream")}).json()
    job = c.post("/v1/jobs", json={**TINY, "dataset": ds["id"], "seed": 404}).json()
    done = service.wait_metrics(job["id"], timeout=WAIT)
    assert done["status"] == "succeeded" and done["metrics_status"] == "failed", done
    ckpt = c.get(f"/v1/checkpoints/{done['checkpoint_id']}").json()
    assert ckpt["metrics_status"] == "failed" and "no held-out images" in ckpt["metrics_error"]
    dense = next(f for f in ckpt["files"] if f["format"] == "dense")
    r = c.get(f"/v1/checkpoints/{ckpt['id']}/file")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == dense["sha256"]
    ended = [e for e in Client(service.base, service.admin_key()).events(job["id"]) if e.event == "evaluation"]
    assert ended[-1].data["metrics_status"] == "failed" and "no held-out images" in ended[-1].data["error"]
    assert c.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409  # nothing left to cancel


def test_a_worker_killed_during_evaluation_leaves_a_checkpoint_that_is_re_evaluated(service: Service) -> None:
    c = Client(service.base, service.admin_key())
    # digits has no feature classifier: its evaluation is the held-out loss and the sample grid, here a long one
    job = c.submit({**TINY, "sample_steps": 800, "seed": 405})
    done = service.wait_job(job["id"], lambda j: j["metrics_status"] == "running", timeout=WAIT)
    dense = next(f for f in c.checkpoint(done["checkpoint_id"])["files"] if f["format"] == "dense")
    alive = [w for w in service.workers if w.p.poll() is None]
    assert len(alive) == 1
    alive[0].kill(signal.SIGKILL)
    pending = service.wait_job(job["id"], lambda j: j["metrics_status"] == "pending", timeout=60)
    assert pending["status"] == "succeeded"  # the checkpoint was never in doubt
    r = service.client.get(f"/v1/checkpoints/{done['checkpoint_id']}/file")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == dense["sha256"]
    service.start_worker()  # the reaper has sent the evaluation to the broker: this worker takes it
    ready = service.wait_metrics(job["id"], timeout=WAIT)
    assert ready["metrics_status"] == "ready", ready
    ckpt = c.checkpoint(done["checkpoint_id"])
    assert "heldout_loss" in ckpt["metrics"] and next(f for f in ckpt["files"] if f["format"] == "dense") == dense
    log = [(e.data["metrics_status"], e.data.get("attempt")) for e in c.events(job["id"]) if e.event == "evaluation"]
    assert log[0] == ("running", 1) and log[-2:] == [("running", 2), ("ready", None)], log
    assert any(status == "pending" for status, _ in log)
    assert "evaluation of " + ckpt["id"] + ": ready" in Path(service.workers[-1].log_path).read_text()
