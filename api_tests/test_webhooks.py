"""Webhooks against the real servers (API, worker, Redis, PostgreSQL; harness.base_env allows webhooks to
127.0.0.1 and retries quickly), with a receiver on a free port that checks every signature with the user's
secret by its own HMAC and fails the first attempts, so retries show."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from api_tests.conftest import TINY
from api_tests.harness import Service

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def users(service: Service) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two ordinary users (names of their own: user names are never reused)."""
    ann, ben = service.client_for(service.add_user("hook-ann")), service.client_for(service.add_user("hook-ben"))
    yield ann, ben
    ann.close()
    ben.close()


class Receiver:
    """Answers 500 to the first `fail_first` tries of each webhook-id (all of them when None), then 204."""

    def __init__(self, fail_first: int | None) -> None:
        self.got: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.got.append((time.time(), headers, body))
                tries = sum(h["webhook-id"] == headers["webhook-id"] for _, h, _ in receiver.got)
                self.send_response(500 if fail_first is None or tries <= fail_first else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/fine?run=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks, written out here rather than imported: v1,base64(HMAC-SHA256(key, id.ts.body))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())


def settled(client: httpx.Client, job_id: str, timeout: float = 30) -> list[dict]:
    """The (finished) job's deliveries once its `completed` one is there and none is pending."""
    end = time.monotonic() + timeout
    items: list[dict] = []
    while time.monotonic() < end:
        r = client.get(f"/v1/jobs/{job_id}/webhooks")
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        if any(d["event"] == "completed" for d in items) and all(d["state"] != "pending" for d in items):
            return items
        time.sleep(0.2)
    raise AssertionError(f"deliveries of {job_id} not settled in {timeout}s: {items}")


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_deliveries_are_signed_retried_with_backoff_and_recorded(service: Service, users) -> None:  # noqa: ANN001
    alice, bob = users
    backoff = float(service.env["FINE_WEBHOOK_BACKOFF"])
    receiver = Receiver(fail_first=2)
    try:
        secret = alice.get("/v1/webhooks/default/secret").json()["key"]
        assert secret.startswith("whsec_") and alice.get("/v1/webhooks/default/secret").json()["key"] == secret
        bobs = bob.get("/v1/webhooks/default/secret").json()["key"]
        assert bobs != secret
        r = alice.post("/v1/jobs", json={**TINY, "webhook": receiver.url})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.json()["spec"]["webhook"] == receiver.url
        done = service.wait_final(job_id)
        assert done["status"] == "succeeded", done
        deliveries = settled(alice, job_id)
    finally:
        receiver.close()

    # what the receiver got: 3 tries of each event, one webhook-id and one body per event, all signed by alice
    # (one `start` per attempt of the job: one, unless the reaper re-queued it)
    assert len(receiver.got) == 3 * len(deliveries)
    by_id: dict[str, list[tuple[float, dict[str, str], bytes]]] = {}
    for got in receiver.got:
        by_id.setdefault(got[1]["webhook-id"], []).append(got)
    assert sorted(by_id) == sorted(d["id"] for d in deliveries)
    for tries in by_id.values():
        assert len(tries) == 3 and len({body for _, _, body in tries}) == 1
        for at, headers, body in tries:
            assert signed_by(secret, headers, body) and not signed_by(bobs, headers, body)
            assert abs(int(headers["webhook-timestamp"]) - at) < 30
            assert headers["content-type"] == "application/json"
        gaps = [b[0] - a[0] for a, b in zip(tries, tries[1:], strict=False)]
        assert gaps[0] >= backoff * 0.9 and gaps[1] >= 2 * backoff * 0.9, gaps  # exponential backoff

    # the bodies are the job as GET /v1/jobs/{id} returns it (at the first attempt of each event)
    *starts, completed = deliveries
    assert [(d["event"], d["job_status"]) for d in deliveries] == [("start", "running")] * len(starts) + [
        ("completed", "succeeded")] and starts
    assert json.loads(by_id[starts[0]["id"]][0][2])["status"] == "running"
    # The evaluation runs on after `completed` (checkpoint first): it may since have set metrics_status and added
    # its timings; everything else is the job as it is now.
    sent, now = json.loads(by_id[completed["id"]][0][2]), alice.get(f"/v1/jobs/{job_id}").json()
    evaluation = ("metrics_status", "timings")
    assert {k: v for k, v in sent.items() if k not in evaluation} == {k: v for k, v in now.items() if k not in evaluation}
    assert sent["metrics_status"] in ("pending", "running", now["metrics_status"])
    assert {k: v for k, v in sent["timings"].items() if k in now["timings"] and not k.startswith("eval")} == {
        k: v for k, v in now["timings"].items() if k in sent["timings"] and not k.startswith("eval")}

    # what the registry recorded, attempt by attempt
    for d in deliveries:
        assert (d["state"], d["attempts"], d["last_status_code"], d["url"]) == ("delivered", 3, 204, receiver.url)
        assert d["delivered_at"] and d["next_attempt_at"] is None
        assert [(t["attempt"], t["status_code"], t["error"]) for t in d["history"]] == [
            (1, 500, None), (2, 500, None), (3, 204, None)]
        for t in d["history"][:2]:
            assert _at(t["next_attempt_at"]) - _at(t["started_at"]) >= backoff * 2 ** (t["attempt"] - 1)
        assert d["history"][2]["next_attempt_at"] is None

    # only the owner (and admins) read them
    r = bob.get(f"/v1/jobs/{job_id}/webhooks")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM and "no job" in r.json()["detail"]
    assert service.client.get(f"/v1/jobs/{job_id}/webhooks").status_code == 200  # the admin
    assert service.client_for(None).get(f"/v1/jobs/{job_id}/webhooks").status_code == 401


def test_a_receiver_that_keeps_failing_is_given_up(service: Service, users) -> None:  # noqa: ANN001
    ann = users[0]
    max_attempts = int(service.env["FINE_WEBHOOK_MAX_ATTEMPTS"])
    receiver = Receiver(fail_first=None)
    try:
        r = ann.post("/v1/jobs", json={**TINY, "sigma_steps": 5000, "webhook": receiver.url,
                                                 "webhook_events_filter": ["completed"]})  # canceled long before
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        ann.post(f"/v1/jobs/{job_id}/cancel")
        assert service.wait_final(job_id)["status"] == "canceled"
        (d,) = settled(ann, job_id)
    finally:
        receiver.close()
    assert (d["event"], d["job_status"], d["state"], d["attempts"]) == ("completed", "canceled", "failed",
                                                                        max_attempts)
    assert [t["status_code"] for t in d["history"]] == [500] * max_attempts and len(receiver.got) == max_attempts
    assert d["history"][-1]["next_attempt_at"] is None and d["delivered_at"] is None


def test_bad_webhooks_are_a_422(users) -> None:  # noqa: ANN001
    def problem(body: dict) -> dict[str, str]:
        r = users[0].post("/v1/jobs", json={**TINY, **body})
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
        return {e["field"]: e["message"] for e in r.json()["errors"]}

    errors = problem({"webhook": "ftp://127.0.0.1/x", "webhook_events_filter": ["output"]})
    assert "http:// or https://" in errors["webhook"] and "start, completed" in errors["webhook_events_filter"]
    assert "not allowed on this server" in problem({"webhook": "https://example.com/hook"})["webhook"]
    assert "credentials" in problem({"webhook": "http://u:p@127.0.0.1/"})["webhook"]
    assert "2048" in problem({"webhook": "http://127.0.0.1/" + "x" * 2048})["webhook"]
    assert "needs a webhook" in problem({"webhook_events_filter": ["start"]})["webhook_events_filter"]
