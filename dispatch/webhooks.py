"""Sending job webhooks: Standard Webhooks signatures, the server's URL policy, and the sender thread.

A delivery is recorded in the registry with the status change that owes it (learngene_store.webhooks), so
it survives any restart. Senders run in the API processes, never in a worker's training loop: each sweep
claims the due deliveries (a conditional UPDATE, so several API processes never send one attempt twice),
POSTs each with a short timeout, and records the outcome; a failure is retried with exponential backoff up
to `FINE_WEBHOOK_MAX_ATTEMPTS` tries. The body is the job as `GET /v1/jobs/{id}` returns it, rendered by
the caller's `render` (the API's own serialiser) at the first attempt and frozen for the retries.

URL policy (against SSRF: the server must not become a client of its own network): a webhook names an
http(s) host; with `FINE_WEBHOOK_ALLOWED_HOSTS` set, only those hosts; otherwise any host whose addresses
are all public, unless `FINE_WEBHOOK_ALLOW_PRIVATE` (the embedded default). Checked at submission (the
host, and an IP literal) and again before each attempt (every address the host resolves to). Redirects
are not followed. A host that resolves differently between the check and the connection (DNS rebinding)
is not caught: where that matters, list the allowed hosts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.orm import Session

from dispatch.settings import DispatchSettings
from learngene_store import webhooks as store
from learngene_store.db import session_factory

log = logging.getLogger(__name__)

Render = Callable[[Session, str], dict[str, Any] | None]  # (session, job id) -> the job's API body
USER_AGENT = "fine-zoo-webhooks/1"
BATCH = 20  # deliveries claimed per sweep


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed by the secret's
    base64-decoded part (after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix(store.SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature(secret, msg_id, ts, body),
            "content-type": "application/json", "user-agent": USER_AGENT}


def _listed(host: str, allowed: tuple[str, ...]) -> bool:
    return any(host == a or (a.startswith(".") and host.endswith(a)) or (a.startswith("*.") and host.endswith(a[1:]))
               for a in allowed)


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global


def url_refusal(url: str, settings: DispatchSettings, resolve: bool = False) -> str | None:
    """Why this server will not call `url` (None: it will). `resolve`: also check every address of its host."""
    host = (urlsplit(url).hostname or "").lower()
    allowed = settings.webhook_hosts
    if allowed:
        if _listed(host, allowed):
            return None
        return f"webhook host {host!r} is not allowed on this server (FINE_WEBHOOK_ALLOWED_HOSTS: {', '.join(allowed)})"
    if settings.webhook_private_ok:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        host = "127.0.0.1"
    try:
        addresses = [host] if _is_ip(host) else _resolve(host, urlsplit(url).port) if resolve else []
    except OSError as e:
        raise LookupError(f"cannot resolve webhook host {host!r}: {e}") from None
    bad = [a for a in addresses if _private(a)]
    if bad:
        return (f"webhook host {host!r} is a private, loopback or link-local address ({bad[0]}); this server only "
                "calls public addresses (FINE_WEBHOOK_ALLOW_PRIVATE, FINE_WEBHOOK_ALLOWED_HOSTS)")
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def _resolve(host: str, port: int | None) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)})


def deliver_due(settings: DispatchSettings, render: Render, client: httpx.Client, limit: int = BATCH) -> list[str]:
    """One sweep: try every due delivery (up to `limit`); returns their new states."""
    hold = 2 * settings.webhook_timeout + 30  # a claim outlives any attempt; then another sender may retry
    with session_factory(settings)() as session:
        claimed = store.claim_due(session, settings.webhook_max_attempts, hold, limit)
        return [_deliver(session, settings, render, client, c) for c in claimed]


def _deliver(session: Session, settings: DispatchSettings, render: Render, client: httpx.Client,
             c: store.Claimed) -> str:
    def outcome(status_code: int | None, error: str | None, started: float, final: bool = False) -> str:
        state = store.record(session, c, status_code=status_code, error=error, final=final,
                             duration_ms=(time.monotonic() - started) * 1000,
                             max_attempts=settings.webhook_max_attempts, backoff_seconds=settings.webhook_backoff)
        log.info("webhook %s (%s of job %s) attempt %d: %s -> %s", c.id, c.event, c.job_id, c.attempt,
                 status_code or error, state)
        return state

    started = time.monotonic()
    body = c.payload
    if body is None:
        doc = render(session, c.job_id)
        if doc is None:
            return outcome(None, f"job {c.job_id} no longer exists", started, final=True)
        body = store.freeze_payload(session, c, json.dumps(doc, separators=(",", ":")))
    try:
        refusal = url_refusal(c.url, settings, resolve=True)
    except LookupError as e:
        return outcome(None, str(e), started)
    if refusal:
        return outcome(None, f"refused: {refusal}", started, final=True)
    data = body.encode()
    headers = signed_headers(store.signing_secret(session, c.owner), c.id, data)
    session.commit()  # no transaction stays open while the receiver answers
    try:
        with client.stream("POST", c.url, content=data, headers=headers) as r:  # the answer's body is not read
            return outcome(r.status_code, None, started)
    except httpx.HTTPError as e:
        return outcome(None, f"{type(e).__name__}: {e}"[:500], started)


class WebhookSender(threading.Thread):
    """Sweeps for due deliveries every `FINE_WEBHOOK_INTERVAL` seconds (in every API process)."""

    def __init__(self, settings: DispatchSettings, render: Render) -> None:
        super().__init__(name="fine-webhooks", daemon=True)
        self.settings = settings
        self.render = render
        self.stopped = threading.Event()

    def run(self) -> None:
        failing = False
        with httpx.Client(timeout=self.settings.webhook_timeout, follow_redirects=False) as client:
            while not self.stopped.wait(self.settings.webhook_interval):
                try:
                    while len(deliver_due(self.settings, self.render, client)) == BATCH and not self.stopped.is_set():
                        pass  # a full batch: more may be due
                    failing = False
                except Exception:
                    if not failing:  # once per streak (the database may be down for a while)
                        log.exception("webhook sweep failed; retrying every %.1f s", self.settings.webhook_interval)
                    failing = True

    def stop(self) -> None:
        self.stopped.set()
