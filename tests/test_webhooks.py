"""Webhooks without a worker: the Standard Webhooks signature, the spec's and the server's URL rules, and the
delivery outbox on a real (SQLite) registry with a real HTTP receiver: retries with backoff, giving up,
refused URLs, and an attempt interrupted by a dying sender."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from client.webhooks import WebhookError, verify
from dispatch.webhooks import deliver_due, signature, signed_headers, url_refusal
from fine.spec import JobSpec
from fine_zoo.settings import Settings
from learngene_store import jobs
from learngene_store import webhooks as outbox
from learngene_store.db import session_factory
from learngene_store.models import Job, WebhookDelivery
from tests.test_store_jobs import CKPT, FILES, session  # noqa: F401  (the fixture)

# The test vector of the Standard Webhooks specification (and of Replicate's client libraries).
VECTOR = {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
          "timestamp": 1614265330, "body": b'{"test": 2432232314}',
          "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}


def test_signature_is_the_standard_webhooks_one() -> None:
    v = VECTOR
    assert signature(v["secret"], v["id"], v["timestamp"], v["body"]) == v["signature"]
    headers = signed_headers(v["secret"], v["id"], v["body"], v["timestamp"])
    assert headers["webhook-signature"] == v["signature"] and headers["webhook-timestamp"] == "1614265330"
    assert verify(v["secret"], headers, v["body"], now=v["timestamp"] + 10) == {"test": 2432232314}


def test_verify_refuses_what_the_secret_did_not_sign() -> None:
    v = VECTOR
    secret = outbox.new_secret()
    assert secret.startswith("whsec_") and secret != outbox.new_secret()
    headers = signed_headers(secret, "msg_1", b'{"id": "job_1"}')
    assert verify(secret, headers, b'{"id": "job_1"}')["id"] == "job_1"
    for bad_secret, body, hdrs, now in (
            (secret, b'{"id": "job_2"}', headers, None),  # another body
            (v["secret"], b'{"id": "job_1"}', headers, None),  # another user's secret
            (secret, b'{"id": "job_1"}', {**headers, "webhook-id": "msg_2"}, None),  # another message id
            (secret, b'{"id": "job_1"}', headers, time.time() + 3600),  # replayed an hour later
            (secret, b'{"id": "job_1"}', {"webhook-id": "msg_1"}, None)):  # headers missing
        with pytest.raises(WebhookError):
            verify(bad_secret, hdrs, body, now=now)
    # several signatures (a rotation): one match is enough
    both = {**headers, "webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    assert verify(secret, both, b'{"id": "job_1"}')


def test_the_spec_checks_webhook_urls_and_events() -> None:
    def errors(**kw: object) -> dict[str, str]:
        return dict(JobSpec(depth=2, hidden_size=64, dataset="digits", **kw).errors())  # type: ignore[arg-type]

    assert errors(webhook="https://hooks.example.com/fine?token=1", webhook_events_filter=["completed"]) == {}
    for url, says in (("ftp://example.com/x", "http:// or https://"), ("example.com/x", "http:// or https://"),
                      ("http://u:p@example.com/", "credentials"), ("http://example.com:99999/", "Port out of range"),
                      ("http://exa mple.com/", "spaces"), ("http://example.com:0/", "port")):
        assert says in errors(webhook=url).get("webhook", ""), url
    assert "start, completed" in errors(webhook="http://h.example/", webhook_events_filter=["output"])[
        "webhook_events_filter"]
    assert "needs a webhook" in errors(webhook_events_filter=["start"])["webhook_events_filter"]


def test_the_server_refuses_private_addresses_unless_allowed(tmp_path: Path) -> None:
    public = Settings(home=tmp_path, redis_url="redis://x")  # distributed: private addresses refused
    assert public.webhook_private_ok is False and Settings(home=tmp_path).webhook_private_ok is True
    for url in ("http://127.0.0.1:8000/x", "http://10.1.2.3/", "http://[::1]/", "http://169.254.169.254/latest",
                "http://localhost:9/", "http://[::ffff:127.0.0.1]/"):
        assert "private" in (url_refusal(url, public) or ""), url
    assert url_refusal("http://93.184.215.14/hook", public) is None
    assert url_refusal("http://hooks.example.com/", public) is None  # not resolved at submission
    listed = Settings(home=tmp_path, redis_url="redis://x", webhook_allowed_hosts="127.0.0.1, .example.com")
    assert url_refusal("http://127.0.0.1:8000/x", listed) is None  # listed: called although private
    assert url_refusal("https://a.b.example.com/", listed) is None
    assert "not allowed" in (url_refusal("https://example.org/", listed) or "")
    assert "not allowed" in (url_refusal("https://badexample.com/", listed) or "")


def test_status_changes_schedule_deliveries_by_filter(session: Session) -> None:  # noqa: F811
    def job(spec: dict) -> str:
        j = Job(request_hash="h", spec=spec, learngene_id="lg", dataset="digits", method="fine", owner="ann")
        session.add(j)
        session.commit()
        lease = jobs.claim(session, j.id, "w1").lease
        assert lease and jobs.succeed(session, j.id, lease, CKPT, FILES)
        return j.id

    every = job({"webhook": "http://h.example/a"})
    assert [(d.event, d.job_status, d.owner, d.url, d.state) for d in outbox.for_job(session, every)] == [
        ("start", "running", "ann", "http://h.example/a", "pending"),
        ("completed", "succeeded", "ann", "http://h.example/a", "pending")]
    done_only = job({"webhook": "http://h.example/b", "webhook_events_filter": ["completed"]})
    assert [d.event for d in outbox.for_job(session, done_only)] == ["completed"]
    assert outbox.for_job(session, job({})) == []
    canceled = Job(request_hash="h", spec={"webhook": "http://h.example/c"}, learngene_id="lg", dataset="digits",
                   method="fine")
    session.add(canceled)
    session.commit()
    jobs.cancel_queued(session, canceled.id)  # canceled before it ran: completed, never start
    assert [(d.event, d.job_status) for d in outbox.for_job(session, canceled.id)] == [("completed", "canceled")]


class Receiver:
    """A local HTTP receiver answering each POST with the next status of `script` (then the last one)."""

    def __init__(self, script: list[int]) -> None:
        self.script = script
        self.got: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.script[min(len(receiver.got), len(receiver.script)) - 1]
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def sender(tmp_path: Path) -> Iterator[tuple[Settings, httpx.Client]]:
    settings = Settings(home=tmp_path, webhook_backoff=0.2, webhook_max_attempts=3, webhook_timeout=2)
    with httpx.Client(timeout=2) as client:
        yield settings, client


def _queued_delivery(s: Session, url: str, owner: str = "ann") -> str:
    """A job with a webhook, canceled while queued: one `completed` delivery, due now."""
    j = Job(request_hash="h", spec={"webhook": url}, learngene_id="lg", dataset="digits", method="fine", owner=owner)
    s.add(j)
    s.commit()
    jobs.cancel_queued(s, j.id)
    return j.id


RENDERS = iter(range(10**6))


def _render(s: Session, job_id: str) -> dict:
    """A stand-in for the API's job body that changes at every call (the body is rendered only once)."""
    job = s.get(Job, job_id, populate_existing=True)
    return {"id": job_id, "status": job.status if job else None, "render": next(RENDERS)}


def _drain(settings: Settings, client: httpx.Client, until: float = 10.0) -> None:
    """Sweep until no delivery is pending (or `until` seconds)."""
    end = time.monotonic() + until
    with session_factory(settings)() as s:
        while time.monotonic() < end:
            deliver_due(settings, _render, client)
            if not s.query(WebhookDelivery).filter(WebhookDelivery.state == "pending").count():
                return
            s.expire_all()
            time.sleep(0.02)
    raise AssertionError("deliveries still pending")


def test_failures_are_retried_with_backoff_then_delivered(session: Session, sender) -> None:  # noqa: F811
    settings, client = sender
    receiver = Receiver([500, 502, 204])
    try:
        job_id = _queued_delivery(session, receiver.url)
        _drain(settings, client)
    finally:
        receiver.close()
    secret = outbox.signing_secret(session, "ann")
    assert len(receiver.got) == 3
    ids = {h["webhook-id"] for _, h, _ in receiver.got}
    bodies = {b for _, _, b in receiver.got}
    assert len(ids) == 1 and len(bodies) == 1  # one message: the same id and bytes on every retry
    for _, headers, body in receiver.got:
        assert verify(secret, headers, body)["status"] == "canceled"
    gaps = [b[0] - a[0] for a, b in zip(receiver.got, receiver.got[1:], strict=False)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps  # backoff 0.2 s, doubling
    (d,) = outbox.for_job(session, job_id)
    session.refresh(d)
    assert (d.state, d.attempts, d.last_status_code, d.next_attempt_at) == ("delivered", 3, 204, None)
    assert d.delivered_at is not None
    history = [(t.attempt, t.status_code, t.error, t.next_attempt_at is not None) for t in d.tries]
    assert history == [(1, 500, None, True), (2, 502, None, True), (3, 204, None, False)]
    for t in d.tries[:2]:  # each retry was scheduled backoff * 2^(n-1) after its attempt
        assert (t.next_attempt_at - t.started_at).total_seconds() >= 0.2 * 2 ** (t.attempt - 1)


def test_gives_up_after_the_last_attempt(session: Session, sender) -> None:  # noqa: F811
    settings, client = sender
    receiver = Receiver([503])
    try:
        job_id = _queued_delivery(session, receiver.url)
        _drain(settings, client)
    finally:
        receiver.close()
    (d,) = outbox.for_job(session, job_id)
    session.refresh(d)
    assert len(receiver.got) == 3 and (d.state, d.attempts, d.delivered_at) == ("failed", 3, None)
    assert [t.status_code for t in d.tries] == [503, 503, 503] and d.tries[-1].next_attempt_at is None


def test_a_dead_receiver_is_an_error_per_attempt(session: Session, sender) -> None:  # noqa: F811
    settings, client = sender
    receiver = Receiver([200])
    url = receiver.url
    receiver.close()  # nothing listens there now
    job_id = _queued_delivery(session, url)
    _drain(settings, client)
    (d,) = outbox.for_job(session, job_id)
    session.refresh(d)
    assert d.state == "failed" and all(t.status_code is None and "Connect" in (t.error or "") for t in d.tries)


def test_a_refused_url_fails_at_once_without_a_request(session: Session, tmp_path: Path) -> None:  # noqa: F811
    settings = Settings(home=tmp_path, redis_url="redis://x", webhook_backoff=0.01)  # private addresses refused
    receiver = Receiver([200])
    try:
        job_id = _queued_delivery(session, receiver.url)
        with httpx.Client(timeout=2) as client:
            deliver_due(settings, _render, client)
    finally:
        receiver.close()
    (d,) = outbox.for_job(session, job_id)
    session.refresh(d)
    assert receiver.got == [] and d.state == "failed" and d.attempts == 1
    assert d.last_error.startswith("refused: ") and "private" in d.last_error


def test_an_interrupted_attempt_is_taken_over(session: Session, sender) -> None:  # noqa: F811
    settings, client = sender
    receiver = Receiver([200])
    try:
        job_id = _queued_delivery(session, receiver.url)
        (claimed,) = outbox.claim_due(session, max_attempts=3, hold_seconds=0.3)  # a sender that then dies
        assert outbox.claim_due(session, max_attempts=3, hold_seconds=0.3) == []  # held: nobody else sends it
        time.sleep(0.35)
        _drain(settings, client)  # another sender (or this one restarted) takes it over
    finally:
        receiver.close()
    (d,) = outbox.for_job(session, job_id)
    session.refresh(d)
    assert claimed.attempt == 1 and len(receiver.got) == 1 and d.state == "delivered"
    assert [(t.attempt, t.status_code, t.error) for t in d.tries] == [(1, None, outbox.INTERRUPTED), (2, 200, None)]
    # a dead sender's claim is dead: its late report changes nothing
    state = outbox.record(session, claimed, status_code=500, error=None, duration_ms=1, max_attempts=3,
                          backoff_seconds=1)
    session.refresh(d)
    assert state == "lost claim" and d.state == "delivered"


def test_secrets_are_per_user_and_stable(session: Session) -> None:  # noqa: F811
    a = outbox.signing_secret(session, "ann")
    assert a == outbox.signing_secret(session, "ann") != outbox.signing_secret(session, "bob")


def test_fine_jobs_submit_takes_a_webhook() -> None:
    import argparse

    from client.cli import add_spec_options, spec_from_args

    p = argparse.ArgumentParser()
    add_spec_options(p)
    a = p.parse_args(["--depth", "2", "--hidden-size", "64", "--dataset", "digits", "--webhook", "https://h.example/x",
                      "--webhook-events-filter", "start, completed"])
    assert spec_from_args(a) == {"depth": 2, "hidden_size": 64, "dataset": "digits", "webhook": "https://h.example/x",
                                 "webhook_events_filter": ["start", "completed"]}
    assert JobSpec(**spec_from_args(a)).errors() == []


def test_a_spent_interrupted_delivery_is_given_up(session: Session) -> None:  # noqa: F811
    job_id = _queued_delivery(session, "http://h.example/x")
    for _ in range(2):  # two senders die mid-attempt; the claims expire at once
        assert len(outbox.claim_due(session, max_attempts=2, hold_seconds=0)) == 1
    assert outbox.claim_due(session, max_attempts=2, hold_seconds=0) == []
    (d,) = outbox.for_job(session, job_id)
    session.refresh(d)
    assert (d.state, d.attempts) == ("failed", 2) and outbox.INTERRUPTED in d.last_error
