"""Checking a fine-zoo webhook on the receiving side (Standard Webhooks, as Replicate signs them).

    from client.webhooks import verify
    secret = Client(url, key).webhook_secret()          # whsec_..., once; keep it with the receiver
    job = verify(secret, request.headers, raw_body)     # raises WebhookError unless signed by the service

Deliveries are at least once: a retry has the same `webhook-id`, so a receiver skips ids it has seen.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

TOLERANCE_S = 300  # a signature older or newer than this is refused (replays)


class WebhookError(ValueError):
    """Not a webhook this service signed with this secret (or too old)."""


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance: float = TOLERANCE_S,
           now: float | None = None) -> dict[str, Any]:
    """Check the `webhook-signature` of a delivery against `secret`; returns the job it carries."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(stamp)
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (ValueError, binascii.Error):
        raise WebhookError("bad webhook-timestamp or secret") from None
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise WebhookError(f"webhook-timestamp {ts} is more than {tolerance:g} s from now")
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    for sig in signatures.split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise WebhookError("no webhook-signature matches this body and secret")
