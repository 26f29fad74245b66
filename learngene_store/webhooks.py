"""Webhook deliveries in the registry: an outbox that survives any process.

`schedule` runs in the transaction of a job's status change (events.status calls it), so a delivery is
recorded exactly when its event is; senders (dispatch/webhooks.py, in the API processes) then claim due
deliveries with a conditional UPDATE, try them, and record every attempt. Nothing here speaks HTTP.

    pending --claim--> (attempt n) --2xx--> delivered
       ^                    |
       +--- next_attempt_at = now + backoff * 2^(n-1) ---+   (n < max_attempts; else failed)
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fine.spec import WEBHOOK_EVENTS
from learngene_store.models import Job, WebhookAttempt, WebhookDelivery, WebhookSecret, utcnow

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# The event a status change is, for a job's webhook (Replicate: start, completed).
EVENT_OF = {"running": "start", "succeeded": "completed", "failed": "completed", "canceled": "completed"}
INTERRUPTED = "no outcome recorded: the sender stopped during this attempt"


def schedule(session: Session, job_id: str, status: str) -> WebhookDelivery | None:
    """Record the delivery a status change owes the job's webhook, if it has one that wants this event
    (uncommitted: the caller's transaction commits it with the change)."""
    event = EVENT_OF.get(status)
    if event is None:
        return None
    row = session.execute(select(Job.spec, Job.owner).where(Job.id == job_id)).one_or_none()
    if row is None or not (row.spec or {}).get("webhook"):
        return None
    wanted = row.spec.get("webhook_events_filter") or WEBHOOK_EVENTS
    if event not in wanted:
        return None
    delivery = WebhookDelivery(job_id=job_id, owner=row.owner, event=event, job_status=status,
                               url=row.spec["webhook"], state="pending", attempts=0, next_attempt_at=utcnow())
    session.add(delivery)
    session.flush()
    return delivery


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_secret(session: Session, owner: str) -> str:
    """The owner's signing secret, made on first use (commits; two processes racing agree on one)."""
    found = session.get(WebhookSecret, owner)
    if found is not None:
        return found.secret
    session.add(WebhookSecret(owner=owner, secret=new_secret()))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
    found = session.get(WebhookSecret, owner, populate_existing=True)
    assert found is not None
    return found.secret


@dataclass(frozen=True)
class Claimed:
    """A delivery this sender may try now, as attempt number `attempt`."""

    id: str
    job_id: str
    owner: str
    event: str
    url: str
    payload: str | None
    attempt: int
    token: str


def claim_due(session: Session, max_attempts: int, hold_seconds: float, limit: int = 20) -> list[Claimed]:
    """Claim up to `limit` deliveries that are due and not held by another sender (whose claim expires after
    `hold_seconds`, so a sender that died mid-attempt only delays its deliveries). Each claim counts an
    attempt and records it (as interrupted until `record` fills it in)."""
    now = utcnow()
    free = or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now)
    # a delivery whose last allowed attempt was interrupted is given up (looked for first: an idle sweep writes nothing)
    spent = (WebhookDelivery.state == "pending", WebhookDelivery.attempts >= max_attempts, free)
    if session.execute(select(WebhookDelivery.id).where(*spent).limit(1)).first() is not None:
        session.execute(update(WebhookDelivery).where(*spent)
                        .values(state="failed", next_attempt_at=None, claim=None, claimed_until=None,
                                last_error=f"gave up after {max_attempts} attempts ({INTERRUPTED})"))
        session.commit()
    due = (WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now,
           WebhookDelivery.attempts < max_attempts, free)
    ids = session.execute(select(WebhookDelivery.id).where(*due)
                          .order_by(WebhookDelivery.next_attempt_at).limit(limit)).scalars().all()
    claimed = []
    for delivery_id in ids:
        token = secrets.token_hex(8)
        res = session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, *due)
                              .values(claim=token, claimed_until=now + timedelta(seconds=hold_seconds),
                                      attempts=WebhookDelivery.attempts + 1))
        if res.rowcount == 1:
            d = session.get(WebhookDelivery, delivery_id, populate_existing=True)
            assert d is not None
            session.add(WebhookAttempt(delivery_id=d.id, attempt=d.attempts, started_at=now, error=INTERRUPTED))
            claimed.append(Claimed(d.id, d.job_id, d.owner, d.event, d.url, d.payload, d.attempts, token))
        session.commit()
    return claimed


def freeze_payload(session: Session, claimed: Claimed, payload: str) -> str:
    """Keep the body of the first attempt, so every retry sends the same bytes; returns the body to send."""
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == claimed.id, WebhookDelivery.payload.is_(None))
                    .values(payload=payload))
    session.commit()
    return session.execute(select(WebhookDelivery.payload).where(WebhookDelivery.id == claimed.id)).scalar_one()


def retry_at(now: datetime, attempt: int, backoff_seconds: float) -> datetime:
    """When attempt `attempt + 1` is due after attempt `attempt` failed: exponential backoff."""
    return now + timedelta(seconds=backoff_seconds * 2 ** (attempt - 1))


def record(session: Session, claimed: Claimed, *, status_code: int | None, error: str | None, duration_ms: float,
           max_attempts: int, backoff_seconds: float, final: bool = False) -> str:
    """Record the outcome of a claimed attempt: delivered on a 2xx, else retried with backoff until
    `max_attempts` (or at once given up when `final`, e.g. a URL the server refuses). Returns the new state."""
    now = utcnow()
    delivered = error is None and status_code is not None and 200 <= status_code < 300
    next_at = None
    if delivered:
        state = "delivered"
    elif final or claimed.attempt >= max_attempts:
        state = "failed"
    else:
        state, next_at = "pending", retry_at(now, claimed.attempt, backoff_seconds)
    res = session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == claimed.id, WebhookDelivery.claim == claimed.token)
        .values(state=state, next_attempt_at=next_at, claim=None, claimed_until=None, last_status_code=status_code,
                last_error=error, delivered_at=now if delivered else None))
    session.execute(update(WebhookAttempt)
                    .where(WebhookAttempt.delivery_id == claimed.id, WebhookAttempt.attempt == claimed.attempt)
                    .values(status_code=status_code, error=error, duration_ms=round(duration_ms, 1),
                            next_attempt_at=next_at))
    session.commit()
    return state if res.rowcount == 1 else "lost claim"


def for_job(session: Session, job_id: str) -> list[WebhookDelivery]:
    """A job's deliveries, oldest first, with their attempts."""
    q = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.created_at,
                                                                                 WebhookDelivery.id)
    return list(session.execute(q).scalars())
