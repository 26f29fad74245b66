"""Live progress (GET /v1/jobs/{id}/events) and the pictures of a checkpoint, on the distributed set-up."""

from __future__ import annotations

import json

import httpx

from api_tests.conftest import TINY
from api_tests.harness import Service
from client import Client, parse_events


def test_events_arrive_in_order_and_a_reconnect_misses_none(service: Service) -> None:
    c = Client(service.base, service.admin_key())
    job = c.submit({**TINY, "sigma_steps": 40, "seed": 101})
    first: list = []
    for event in c.events(job["id"]):  # read until training reports, then drop the stream
        first.append(event)
        if event.event == "progress":
            break
    assert [e.id for e in first] == list(range(1, len(first) + 1))
    rest = list(c.events(job["id"], after=first[-1].id))
    end = rest.pop()
    assert end.event == "end" and end.id is None and end.data["status"] == "succeeded"
    log = first + rest
    assert [e.id for e in log] == list(range(1, len(log) + 1)), "a gap or a repeat across the reconnect"
    statuses = [e.data["status"] for e in log if e.event == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    evaluation = [e.data["metrics_status"] for e in log if e.event == "evaluation"]
    assert evaluation == ["running", "ready"] and end.data["metrics_status"] == "ready"  # after the checkpoint
    assert log[-1].data["checkpoint_id"] == end.data["checkpoint_id"]
    sigma = [e.data for e in log if e.event == "progress" and e.data["phase"] == "sigma"]
    assert sigma and all(d["total"] == 40 for d in sigma)
    assert [d["step"] for d in sigma] == sorted(d["step"] for d in sigma) and sigma[-1]["step"] == 40
    # the whole log again, from the start and through the Last-Event-ID header: the same events
    assert [(e.id, e.event, e.data) for e in c.events(job["id"])][:-1] == [(e.id, e.event, e.data) for e in log]
    with httpx.stream("GET", f"{service.base}/v1/jobs/{job['id']}/events",
                      headers={"Last-Event-ID": str(len(log) - 1), "Authorization": f"Bearer {service.admin_key()}"},
                      timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        tail = list(parse_events(r.iter_lines()))
    assert [(e.id, e.event) for e in tail] == [(len(log), "evaluation"), (None, "end")]
    # the checkpoint's pictures: the sigma-stage curve (PNG + numbers) and the sample grid, ETag-cacheable
    ckpt_id = end.data["checkpoint_id"]
    curve = service.client.get(f"/v1/checkpoints/{ckpt_id}/curve.png")
    assert curve.status_code == 200 and curve.headers["content-type"] == "image/png"
    assert curve.content.startswith(b"\x89PNG") and curve.headers["content-disposition"].startswith("inline")
    assert service.client.get(f"/v1/checkpoints/{ckpt_id}/curve.png",
                              headers={"If-None-Match": curve.headers["etag"]}).status_code == 304
    numbers = json.loads(service.client.get(f"/v1/checkpoints/{ckpt_id}/curve.json").content)
    assert numbers["phases"]["sigma"]["step"] == list(range(1, 41)) and len(numbers["phases"]["sigma"]["loss"]) == 40
    samples = service.client.get(f"/v1/checkpoints/{ckpt_id}/samples.png")
    assert samples.status_code == 200 and samples.content.startswith(b"\x89PNG")
    listed = c.checkpoints(depth=TINY["depth"], dataset="digits")
    assert ckpt_id in [x["id"] for x in listed["items"]]
    assert c.checkpoints(depth=TINY["depth"] + 7)["items"] == []


def test_events_are_live_and_a_cancel_shows_in_them(service: Service) -> None:
    c = Client(service.base, service.admin_key())
    job = c.submit({**TINY, "sigma_steps": 20000, "seed": 102})
    stream = c.events(job["id"])
    for event in stream:
        if event.event == "progress" and event.data["phase"] == "sigma" and event.data["step"] > 0:
            break
    assert c.job(job["id"])["status"] == "running", "the progress should arrive while the job runs"
    c.cancel(job["id"])
    rest = list(stream)  # the same stream goes on to the end
    kinds = [(e.event, e.data.get("status")) for e in rest]
    assert ("cancel", None) in kinds and kinds[-2:] == [("status", "canceled"), ("end", "canceled")]
    assert kinds.index(("cancel", None)) < kinds.index(("status", "canceled"))


def test_events_of_an_unknown_job_are_a_problem(service: Service) -> None:
    r = service.client.get("/v1/jobs/job_nope/events")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    bad = service.client.get("/v1/jobs/job_nope/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 404
