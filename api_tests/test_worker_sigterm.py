"""SIGTERM to a worker mid-job: it stops at its next step and hands the job back to the queue at once
(not after the heartbeat timeout, and without spending one of the job's attempts)."""

from __future__ import annotations

import httpx

from api_tests.conftest import TINY
from api_tests.harness import Service
from api_tests.test_worker_death import checkpoints_of, live_worker


def test_sigterm_releases_the_lease(service: Service, client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={**TINY, "sigma_steps": 20000, "seed": 35}).json()
    service.wait_job(job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] > 0, timeout=90)
    live_worker(service).stop()  # SIGTERM; returns once the worker has exited
    released = client.get(f"/v1/jobs/{job['id']}").json()
    assert released["status"] == "queued" and "shut down (SIGTERM)" in released["error"], released
    assert released["attempts"] == 0
    service.start_worker()
    again = service.wait_job(job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] > 0, timeout=90)
    assert again["attempts"] == 1
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert service.wait_final(job["id"], timeout=30)["status"] == "canceled"
    assert checkpoints_of(service, job["id"]) == 0
