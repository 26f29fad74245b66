"""A job's event log: status changes and progress, numbered per job, read back after a number.

`record` must run inside the transaction that changed the job row (after its UPDATE or INSERT), so
that the row lock orders a job's events; the caller commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from learngene_store import webhooks
from learngene_store.models import JobEvent


def record(session: Session, job_id: str, kind: str, data: dict[str, Any]) -> int:
    """Append one event to the job's log (uncommitted) and return its number."""
    last = session.execute(select(func.max(JobEvent.seq)).where(JobEvent.job_id == job_id)).scalar()
    seq = (last or 0) + 1
    session.add(JobEvent(job_id=job_id, seq=seq, kind=kind, data=data))
    session.flush()
    return seq


def status(session: Session, job_id: str, status: str, **data: Any) -> int:
    """Record a status change (plus whatever explains it: error, attempt), and the webhook delivery it owes."""
    webhooks.schedule(session, job_id, status)
    return record(session, job_id, "status", {"status": status, **{k: v for k, v in data.items() if v is not None}})


def after(session: Session, job_id: str, seq: int, limit: int = 500) -> list[JobEvent]:
    """The job's events numbered above `seq`, oldest first."""
    q = (select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > seq)
         .order_by(JobEvent.seq).limit(limit))
    return list(session.execute(q).scalars())
