"""Worker death: a SIGKILLed worker's job is re-queued (heartbeat) and finished by another worker,
or failed with a reason after the attempt limit; never stuck in `running`, never two checkpoints."""

from __future__ import annotations

import signal
import time

import httpx
import psycopg2

from api_tests.conftest import TINY
from api_tests.harness import Service
from dispatch.broker import enqueue_job, make_celery
from fine_zoo.settings import Settings


def checkpoints_of(service: Service, job_id: str) -> int:
    with psycopg2.connect(service.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM checkpoints WHERE job_id = %s", (job_id,))
        return cur.fetchone()[0]


def live_worker(service: Service):  # type: ignore[no-untyped-def]
    alive = [w for w in service.workers if w.p.poll() is None]
    assert len(alive) == 1, "expected exactly one live worker"
    return alive[0]


def kill_mid_job(service: Service, job_id: str, attempt: int) -> None:
    service.wait_job(job_id, lambda j: j["status"] == "running" and j["attempts"] == attempt
                     and j["progress"]["phase"] == "sigma" and j["progress"]["step"] > 0, timeout=90)
    live_worker(service).kill(signal.SIGKILL)


def test_killed_worker_job_finishes_on_a_new_worker(service: Service, client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={**TINY, "sigma_steps": 1500, "seed": 31}).json()
    kill_mid_job(service, job["id"], attempt=1)
    requeued = service.wait_job(job["id"], lambda j: j["status"] == "queued", timeout=30)
    assert requeued["attempts"] == 1 and "lost its worker" in requeued["error"]
    service.start_worker()
    done = service.wait_final(job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2 and done["progress"]["phase"] == "done"
    assert checkpoints_of(service, job["id"]) == 1

    # A redelivered message for a finished job does nothing (idempotent task)
    settings = Settings(redis_url=service.env["REDIS_URL"], broker_key_prefix=service.env["FINE_BROKER_KEY_PREFIX"],
                        database_url=service.env["DATABASE_URL"])
    enqueue_job(make_celery(settings), settings, job["id"])
    worker = live_worker(service)
    end = time.monotonic() + 30
    while "skipped: job is succeeded" not in worker.tail(200) and time.monotonic() < end:
        time.sleep(0.25)
    assert "skipped: job is succeeded" in worker.tail(200)
    assert checkpoints_of(service, job["id"]) == 1
    again = client.get(f"/v1/jobs/{job['id']}").json()
    assert again["status"] == "succeeded" and again["attempts"] == 2


def test_job_fails_with_reason_after_attempt_limit(service: Service, client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={**TINY, "sigma_steps": 20000, "seed": 32}).json()
    kill_mid_job(service, job["id"], attempt=1)
    service.wait_job(job["id"], lambda j: j["status"] == "queued", timeout=30)
    service.start_worker()
    kill_mid_job(service, job["id"], attempt=2)
    failed = service.wait_final(job["id"], timeout=30)
    assert failed["status"] == "failed"
    assert "worker lost" in failed["error"] and "gave up after 2 attempts (limit 2)" in failed["error"]
    assert checkpoints_of(service, job["id"]) == 0
    service.start_worker()  # leave a worker for whatever runs next
    ok = client.post("/v1/jobs", json={**TINY, "sigma_steps": 1, "seed": 33}).json()
    assert service.wait_final(ok["id"])["status"] == "succeeded"
