"""Jobs end to end: submit, poll, download, idempotency, cancel, pagination."""

from __future__ import annotations

import hashlib
import io
import zipfile

import httpx
from safetensors.numpy import load as load_safetensors

from api_tests.conftest import TINY
from api_tests.harness import Service

PROBLEM = "application/problem+json"


def submit(client: httpx.Client, **overrides: object) -> dict:
    r = client.post("/v1/jobs", json={**TINY, **overrides})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()


def test_submit_poll_download(service: Service, client: httpx.Client) -> None:
    job = submit(client)
    assert job["status"] in ("queued", "running")
    assert job["learngene"].startswith("toy-digits")  # the default (newest) learngene
    done = service.wait_metrics(job["id"])
    assert done["status"] == "succeeded" and done["metrics_status"] == "ready", done
    assert done["progress"]["phase"] == "done" and done["progress"]["step"] == done["progress"]["total"] > 0
    assert done["attempts"] == 1
    t = done["timings"]
    assert 0 <= t["queued_s"] <= t["total_s"] and 0 < t["running_s"] <= t["total_s"]
    assert {"load_s", "assemble_s", "sigma_s", "save_s", "evaluate_s"} <= set(t)  # the worker's phases
    assert t["checkpoint_s"] <= t["metrics_s"] and t["sigma_s"] + t["save_s"] <= t["checkpoint_s"]

    ckpt = client.get(f"/v1/checkpoints/{done['checkpoint_id']}").json()
    assert ckpt["job_id"] == job["id"] and ckpt["depth"] == 3 and ckpt["hidden_size"] == 64
    formats = {f["format"]: f for f in ckpt["files"]}
    assert {"dense", "factored", "config", "samples", "metrics"} <= set(formats)
    assert "heldout_loss" in ckpt["metrics"]

    r = client.get(f"/v1/checkpoints/{ckpt['id']}/file")
    assert r.status_code == 200
    body = r.content
    sha = hashlib.sha256(body).hexdigest()
    assert r.headers["etag"] == f'"{sha}"' and sha == formats["dense"]["sha256"]
    assert int(r.headers["content-length"]) == len(body) == formats["dense"]["bytes"]
    tensors = load_safetensors(body)
    assert any("blocks.2" in k for k in tensors)  # depth 3
    assert not any("blocks.3" in k for k in tensors)

    # HEAD: headers, no body
    h = client.head(f"/v1/checkpoints/{ckpt['id']}/file")
    assert h.status_code == 200 and h.content == b"" and int(h.headers["content-length"]) == len(body)
    # Range resume: first part, then the rest, equals the whole
    first = client.get(f"/v1/checkpoints/{ckpt['id']}/file", headers={"Range": "bytes=0-999"})
    assert first.status_code == 206 and len(first.content) == 1000
    assert first.headers["content-range"] == f"bytes 0-999/{len(body)}"
    rest = client.get(f"/v1/checkpoints/{ckpt['id']}/file",
                      headers={"Range": "bytes=1000-", "If-Range": r.headers["etag"]})
    assert rest.status_code == 206 and first.content + rest.content == body
    # If-Range with a stale ETag: the whole file again
    stale = client.get(f"/v1/checkpoints/{ckpt['id']}/file", headers={"Range": "bytes=0-9", "If-Range": '"x"'})
    assert stale.status_code == 200 and stale.content == body
    # Conditional GET
    assert client.get(f"/v1/checkpoints/{ckpt['id']}/file",
                      headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    # Unsatisfiable range: problem+json
    bad = client.get(f"/v1/checkpoints/{ckpt['id']}/file", headers={"Range": f"bytes={len(body) + 5}-"})
    assert bad.status_code == 416 and bad.headers["content-type"] == PROBLEM
    assert bad.headers["content-range"] == f"bytes */{len(body)}"

    # other formats
    png = client.get(f"/v1/checkpoints/{ckpt['id']}/file?format=samples")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    fac = client.get(f"/v1/checkpoints/{ckpt['id']}/file?format=factored")
    assert fac.status_code == 200 and len(fac.content) < len(body)
    assert hashlib.sha256(fac.content).hexdigest() == formats["factored"]["sha256"]
    if "diffusers" in formats:
        z = client.get(f"/v1/checkpoints/{ckpt['id']}/file?format=diffusers")
        assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(z.content)) as archive:
            names = set(archive.namelist())
            assert {"config.json", "diffusion_pytorch_model.safetensors"} <= names
            assert load_safetensors(archive.read("diffusion_pytorch_model.safetensors"))
    else:
        r = client.get(f"/v1/checkpoints/{ckpt['id']}/file?format=diffusers")
        assert r.status_code == 409 and r.headers["content-type"] == PROBLEM and "diffusers" in r.json()["detail"]
    bad_fmt = client.get(f"/v1/checkpoints/{ckpt['id']}/file?format=onnx")
    assert bad_fmt.status_code == 422 and "format" in bad_fmt.json()["detail"]

    # the learngene lists its descendant
    lg = client.get(f"/v1/learngenes/{job['learngene']}").json()
    assert ckpt["id"] in [d["checkpoint_id"] for d in lg["descendants"]]

    # a succeeded job cannot be canceled
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM and "succeeded" in r.json()["detail"]


def test_idempotency_key(service: Service, client: httpx.Client) -> None:
    spec = {**TINY, "seed": 11, "sigma_steps": 1}
    key = {"Idempotency-Key": "key-11"}
    a = client.post("/v1/jobs", json=spec, headers=key)
    b = client.post("/v1/jobs", json=spec, headers=key)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] == b.json()["id"] and b.headers["idempotent-replayed"] == "true"
    assert a.headers["location"] == b.headers["location"]
    other = client.post("/v1/jobs", json={**spec, "seed": 12}, headers=key)
    assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
    assert "Idempotency-Key" in other.json()["detail"]
    assert service.wait_final(a.json()["id"])["status"] == "succeeded"
    # still the same job after it finished
    assert client.post("/v1/jobs", json=spec, headers=key).json()["id"] == a.json()["id"]


def test_cancel_running_and_queued(service: Service, client: httpx.Client) -> None:
    long = submit(client, sigma_steps=20000, seed=5)
    running = service.wait_job(long["id"], lambda j: j["status"] == "running" and j["progress"]["step"] > 0)
    assert running["progress"]["phase"] == "sigma"
    queued = submit(client, seed=6)  # the single worker is busy: this one waits in the queue
    r = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "canceled"
    r = client.post(f"/v1/jobs/{long['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    done = service.wait_final(long["id"], timeout=30)
    assert done["status"] == "canceled" and done["checkpoint_id"] is None
    assert done["progress"]["step"] < 20000
    # the canceled queued job's message is consumed and skipped, never run
    after = submit(client, seed=7, sigma_steps=1)
    assert service.wait_final(after["id"])["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "canceled"
    assert client.get(f"/v1/jobs/{queued['id']}").json()["attempts"] == 0


def test_pagination_and_filters(service: Service, client: httpx.Client) -> None:
    for seed in (21, 22, 23):
        job = submit(client, seed=seed, sigma_steps=1)
        client.post(f"/v1/jobs/{job['id']}/cancel")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/jobs", params=params)
        assert r.status_code == 200
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
        assert 'rel="next"' in r.headers["link"]
    everything = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    assert seen == [j["id"] for j in everything] and len(set(seen)) == len(seen) >= 3 and pages >= 2
    created = [j["created_at"] for j in everything]
    assert created == sorted(created, reverse=True)
    first = client.get("/v1/jobs", params={"status": "canceled", "limit": 1})
    link = first.headers["link"]
    assert "status=canceled" in link and "limit=1" in link  # the next link keeps the filters
    second = client.get(link[1:link.index(">")]).json()["items"]
    assert second and second[0]["status"] == "canceled" and second[0]["id"] != first.json()["items"][0]["id"]
    canceled = client.get("/v1/jobs", params={"status": "canceled", "limit": 100}).json()["items"]
    assert canceled and all(j["status"] == "canceled" for j in canceled)
    assert client.get("/v1/jobs", params={"dataset": "nope"}).json()["items"] == []
    bad = client.get("/v1/jobs", params={"cursor": "!!garbage"})
    assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
    assert client.get("/v1/jobs", params={"status": "done"}).status_code == 422


def test_health_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and set(ready["checks"]) == {"database", "broker", "store"}
    m = client.get("/metrics")
    assert m.status_code == 200 and "fine_http_requests_total" in m.text and 'fine_jobs{status="succeeded"}' in m.text
    assert client.get("/docs").status_code == 200
    assert "/v1/jobs" in client.get("/openapi.json").json()["paths"]




def test_baseline_method_without_factored_form(service: Service, client: httpx.Client) -> None:
    job = submit(client, method="scratch", sigma_steps=3, finetune_steps=2, seed=51)
    assert any("no sigma stage" in w for w in job["warnings"]) and job["progress"]["total"] == 2
    done = service.wait_final(job["id"])
    assert done["status"] == "succeeded", done
    ckpt = client.get(f"/v1/checkpoints/{done['checkpoint_id']}").json()
    assert ckpt["method"] == "scratch" and "factored" not in {f["format"] for f in ckpt["files"]}
    r = client.get(f"/v1/checkpoints/{ckpt['id']}/file?format=factored")
    assert r.status_code == 409 and "produces no factored form" in r.json()["detail"]
