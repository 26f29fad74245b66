"""GET /v1/webhooks/default/secret (the caller's signing secret, as Replicate names it) and
GET /v1/jobs/{id}/webhooks (a job's deliveries and every attempt)."""

from __future__ import annotations

from fastapi import APIRouter

from learngene_store import webhooks as deliveries
from learngene_store.models import Job
from service.access import owns
from service.deps import CurrentUser, JobId, SessionDep
from service.errors import Problem
from service.schemas import WebhookAttemptOut, WebhookDeliveries, WebhookDeliveryOut, WebhookSecretOut

router = APIRouter(tags=["webhooks"])


@router.get("/v1/webhooks/default/secret", response_model=WebhookSecretOut)
def webhook_secret(session: SessionDep, user: CurrentUser) -> WebhookSecretOut:
    """The secret your webhooks are signed with (made on first use; the same for all your jobs). A receiver
    checks `webhook-signature` = `v1,` + base64 HMAC-SHA256(key, `{webhook-id}.{webhook-timestamp}.{body}`),
    the key being the base64-decoded part after `whsec_` (Standard Webhooks)."""
    return WebhookSecretOut(key=deliveries.signing_secret(session, user.name))


@router.get("/v1/jobs/{job_id}/webhooks", response_model=WebhookDeliveries)
def job_webhooks(job_id: JobId, session: SessionDep, user: CurrentUser) -> WebhookDeliveries:
    """The job's webhook deliveries (one per event: start, completed), oldest first, each with every attempt:
    the receiver's status code or the error, and when the next try is due."""
    job = session.get(Job, job_id)
    if job is None or not owns(user, job.owner):
        raise Problem(404, f"no job {job_id!r}; list jobs with GET /v1/jobs", type_="job-not-found")
    items = [WebhookDeliveryOut(
        id=d.id, job_id=d.job_id, event=d.event, job_status=d.job_status, url=d.url, state=d.state,
        attempts=d.attempts, next_attempt_at=d.next_attempt_at, last_status_code=d.last_status_code,
        last_error=d.last_error, delivered_at=d.delivered_at, created_at=d.created_at,
        history=[WebhookAttemptOut(attempt=a.attempt, started_at=a.started_at, duration_ms=a.duration_ms,
                                   status_code=a.status_code, error=a.error, next_attempt_at=a.next_attempt_at)
                 for a in d.tries]) for d in deliveries.for_job(session, job_id)]
    return WebhookDeliveries(items=items)
