"""Pre-training jobs: POST /v1/learngenes with a JSON spec trains an ancestry on a worker and
registers its learngene set, which then serves descendants. (Runs last: it adds the newest set.)"""

from __future__ import annotations

import httpx

from api_tests.conftest import TINY
from api_tests.harness import Service

PRETRAIN = {"dataset": "digits", "depth": 2, "hidden_size": 64, "rank": 4, "steps": 3, "widths": [32],
            "batch_size": 16, "warmup": 1, "eval_images": 16, "name": "api-test"}


def test_pretrain_then_descendant(service: Service, client: httpx.Client) -> None:
    r = client.post("/v1/learngenes", json=PRETRAIN, headers={"Idempotency-Key": "pre-1"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "pretrain" and r.headers["location"] == f"/v1/jobs/{job['id']}"
    again = client.post("/v1/learngenes", json=PRETRAIN, headers={"Idempotency-Key": "pre-1"})
    assert again.json()["id"] == job["id"]
    done = service.wait_final(job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    lg_id = done["result_learngene"]
    assert lg_id.startswith("api-test-") and done["links"]["learngene"] == f"/v1/learngenes/{lg_id}"
    lg = client.get(f"/v1/learngenes/{lg_id}").json()
    assert lg["rank"] == 4 and lg["steps"] == 3 and lg["widths"] == [32, 64] and lg["source_dataset"] == "digits"
    assert [p["name"] for p in lg["pictures"]] == ["curve.png"]  # its pre-training curve, drawn by the worker
    curve = client.get(lg["pictures"][0]["url"])
    assert curve.status_code == 200 and curve.content.startswith(b"\x89PNG")
    assert client.get("/v1/learngenes").json()[0]["id"] == lg_id  # newest: the default for new jobs
    assert [j["id"] for j in client.get("/v1/jobs", params={"kind": "pretrain"}).json()["items"]] == [job["id"]]
    child = client.post("/v1/jobs", json={**TINY, "learngene": lg_id, "sigma_steps": 2}).json()
    child_done = service.wait_final(child["id"])
    assert child_done["status"] == "succeeded" and child_done["learngene"] == lg_id
    assert child_done["checkpoint_id"] in [d["checkpoint_id"] for d in
                                           client.get(f"/v1/learngenes/{lg_id}").json()["descendants"]]


def test_pretrain_cancel_and_validation(service: Service, client: httpx.Client) -> None:
    long = client.post("/v1/learngenes", json={**PRETRAIN, "steps": 100000, "name": "never"}).json()
    service.wait_job(long["id"], lambda j: j["status"] == "running" and j["progress"]["step"] > 0, timeout=90)
    assert client.post(f"/v1/jobs/{long['id']}/cancel").status_code == 202
    done = service.wait_final(long["id"], timeout=30)
    assert done["status"] == "canceled" and done["result_learngene"] is None, done["error"]
    bad = client.post("/v1/learngenes", json={**PRETRAIN, "rank": 0, "patch_size": 3, "name": "No"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in bad.json()["errors"]} == {"rank", "patch_size", "name"}
    assert client.post("/v1/learngenes", json={**PRETRAIN, "colour": 1}).status_code == 422
    wrong = client.post("/v1/learngenes", content=b"x", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415 and "multipart/form-data" in wrong.json()["detail"]
