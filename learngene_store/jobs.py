"""Job state transitions. Each is one conditional UPDATE, so concurrent workers, reapers and
API calls cannot both win: a worker owns a running job only while its `lease` token is current.

    queued --claim--> running --finish--> succeeded | failed | canceled
      ^                  |
      +---- reap --------+   (heartbeat stale, attempts left; else failed with a reason)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import case, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from learngene_store import events
from learngene_store.models import FINAL_STATUSES, Checkpoint, CheckpointFile, Job, utcnow

PROGRESS_KEYS = ("phase", "step", "total", "loss")


@dataclass(frozen=True)
class Claim:
    lease: str | None  # None: not ours to run
    reason: str  # why not (for the log)
    job: Job | None = None


def claim(session: Session, job_id: str, worker_id: str) -> Claim:
    """Take a queued job for this worker; a redelivered or duplicate message gets lease=None."""
    lease = secrets.token_hex(16)
    now = utcnow()
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
        .values(status="running", lease=lease, worker_id=worker_id, heartbeat_at=now, started_at=now, progress_at=now,
                attempts=Job.attempts + 1, phase="starting", error=None, updated_at=now)
    )
    if res.rowcount == 1:
        events.status(session, job_id, "running", worker=worker_id)
    session.commit()
    job = session.get(Job, job_id, populate_existing=True)
    if res.rowcount == 1:
        return Claim(lease, "claimed", job)
    if job is None:
        return Claim(None, "no such job")
    if job.status == "queued" and job.cancel_requested:
        cancel_queued(session, job_id)
        return Claim(None, "canceled before it started")
    return Claim(None, f"job is {job.status}" + (f" on {job.worker_id}" if job.status == "running" else ""))


def beat(session: Session, job_id: str, lease: str, progress: dict[str, Any] | None,
         earlier: list[dict[str, Any]] | None = None) -> tuple[bool, bool]:
    """Heartbeat (+ latest progress; `earlier`: snapshots since the last beat to log before it, e.g. the
    last step of a phase that ended in between). Returns (still_owner, cancel_requested)."""
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now, "updated_at": now}
    if progress:
        values.update(progress)
        moved = [Job.step != progress["step"]] if "step" in progress else []
        moved += [Job.phase != progress["phase"]] if "phase" in progress else []
        if moved:  # a step or phase that moved is progress; a heartbeat alone is not
            values["progress_at"] = case((or_(*moved), now), else_=Job.progress_at)
    res = session.execute(update(Job).where(Job.id == job_id, Job.lease == lease,
                                            Job.status == "running").values(**values))
    if res.rowcount == 1:
        for snapshot in [*(earlier or []), *([progress] if progress else [])]:
            events.record(session, job_id, "progress", {k: snapshot[k] for k in PROGRESS_KEYS if k in snapshot})
    session.commit()
    if res.rowcount != 1:
        return False, False
    cancel = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one()
    return True, bool(cancel)


def _finish(session: Session, job_id: str, lease: str, status: str, error: str | None = None) -> bool:
    now = utcnow()
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.lease == lease, Job.status == "running")
        .values(status=status, error=error, finished_at=now, updated_at=now, lease=None, heartbeat_at=now)
    )
    if res.rowcount == 1:
        events.status(session, job_id, status, error=error)
    session.commit()
    return res.rowcount == 1


def fail(session: Session, job_id: str, lease: str, error: str) -> bool:
    return _finish(session, job_id, lease, "failed", error)


def mark_canceled(session: Session, job_id: str, lease: str) -> bool:
    return _finish(session, job_id, lease, "canceled", "canceled on request")


def succeed(session: Session, job_id: str, lease: str, checkpoint: dict[str, Any],
            files: list[dict[str, Any]], timings: dict[str, float] | None = None,
            evaluator: tuple[str, str] | None = None) -> str | None:
    """Register the checkpoint and mark the job succeeded in one transaction: from here it is downloadable.

    `evaluator` = (eval lease, worker id): the checkpoint is registered with its evaluation already
    claimed by that worker (metrics `running`, see learngene_store/evaluations.py); without it, metrics are
    `pending` and the reaper sends the evaluation to any worker. `timings`: the seconds of each phase so far.
    Returns the checkpoint id, or None if this attempt no longer owns the job. A job that already
    has a checkpoint keeps it (checkpoints.job_id is unique): never two per job.
    """
    from learngene_store import evaluations

    now = utcnow()
    existing = session.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalar_one_or_none()
    try:
        res = session.execute(
            update(Job).where(Job.id == job_id, Job.lease == lease, Job.status == "running")
            .values(status="succeeded", finished_at=now, updated_at=now, lease=None, heartbeat_at=now,
                    phase="done", error=None, **({"timings": timings} if timings is not None else {}))
        )
        if res.rowcount != 1:
            session.rollback()
            return None
        if existing is not None:
            events.status(session, job_id, "succeeded", checkpoint_id=existing.id)
            session.commit()
            return existing.id
        evaluation = ({**evaluations.claim_values(evaluator[0], evaluator[1], now), "eval_attempts": 1}
                      if evaluator is not None else {"metrics_status": "pending"})
        ckpt = Checkpoint(job_id=job_id, **checkpoint, **evaluation)
        ckpt.files = [CheckpointFile(**f) for f in files]
        session.add(ckpt)
        session.flush()
        events.status(session, job_id, "succeeded", checkpoint_id=ckpt.id, metrics_status=ckpt.metrics_status)
        if evaluator is not None:
            evaluations.evaluation_event(session, job_id, ckpt.id, "running", worker=evaluator[1], attempt=1)
        session.commit()
        return ckpt.id
    except IntegrityError:  # another attempt registered in between: keep that one
        session.rollback()
        return None


def succeed_pretrain(session: Session, job_id: str, lease: str, learngene_id: str) -> bool:
    """A pre-training job ends by pointing at the learngene set it registered."""
    now = utcnow()
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.lease == lease, Job.status == "running")
        .values(status="succeeded", finished_at=now, updated_at=now, lease=None, heartbeat_at=now, phase="done",
                error=None, result_learngene_id=learngene_id, resume_sha=None)
    )
    if res.rowcount == 1:
        events.status(session, job_id, "succeeded", learngene_id=learngene_id)
    session.commit()
    return res.rowcount == 1


def save_resume(session: Session, job_id: str, lease: str, sha256: str) -> bool:
    """Record the blob of a running pre-training job's latest state (only while this attempt owns it)."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.lease == lease, Job.status == "running")
                          .values(resume_sha=sha256))
    session.commit()
    return res.rowcount == 1


def cancel_queued(session: Session, job_id: str) -> bool:
    now = utcnow()
    res = session.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                          .values(status="canceled", cancel_requested=True, finished_at=now, updated_at=now,
                                  error="canceled on request"))
    if res.rowcount == 1:
        events.status(session, job_id, "canceled", error="canceled on request")
    session.commit()
    return res.rowcount == 1


def request_cancel(session: Session, job_id: str) -> Job | None:
    """Cancel a queued job at once; ask a running one to stop at its next step."""
    cancel_queued(session, job_id)
    res = session.execute(update(Job).where(Job.id == job_id, Job.status == "running",
                                            Job.cancel_requested.is_(False))
                          .values(cancel_requested=True, updated_at=utcnow()))
    if res.rowcount == 1:
        events.record(session, job_id, "cancel", {"cancel_requested": True})
    session.commit()
    return session.get(Job, job_id, populate_existing=True)


@dataclass(frozen=True)
class ReapReport:
    requeued: list[str]
    failed: list[str]
    canceled: list[str]
    redispatch: list[str]


def reap(session: Session, heartbeat_timeout: float, max_attempts: int, dispatch_grace: float,
         stall_timeout: float | None = None, redispatch_after: float | None = None) -> ReapReport:
    """Find running jobs whose worker went silent, or that beat but make no progress for
    `stall_timeout` (hung): re-queue them (attempts left) or fail them, with the reason.

    Also lists queued jobs that never reached the broker (e.g. the broker was down at submit
    time), and those dispatched `redispatch_after` ago but never claimed (the message was lost),
    for the caller to dispatch again: nothing accepted is ever lost.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=heartbeat_timeout)
    requeued: list[str] = []
    failed: list[str] = []
    canceled: list[str] = []
    silent = (Job.heartbeat_at < cutoff,)
    stale = session.execute(select(Job.id, Job.attempts, Job.worker_id, Job.cancel_requested, Job.lease)
                            .where(Job.status == "running", *silent)).all()
    for job_id, attempts, worker_id, cancel, lease in stale:
        why = f"no heartbeat for {heartbeat_timeout:g} s from {worker_id}"
        _reap_one(session, job_id, lease, silent, cancel, attempts, max_attempts, worker_id, why, now,
                  (requeued, failed, canceled))
    if stall_timeout is not None:
        stuck = (Job.progress_at < now - timedelta(seconds=stall_timeout),)
        hung = session.execute(select(Job.id, Job.attempts, Job.worker_id, Job.cancel_requested, Job.lease,
                                      Job.phase, Job.step).where(Job.status == "running", *stuck)).all()
        for job_id, attempts, worker_id, cancel, lease, phase, step in hung:
            why = (f"hung: no progress for {stall_timeout:g} s (phase {phase}, step {step}) although {worker_id} "
                   "still beats (FINE_STALL_TIMEOUT)")
            _reap_one(session, job_id, lease, stuck, cancel, attempts, max_attempts, worker_id, why, now,
                      (requeued, failed, canceled))
    session.commit()
    grace = now - timedelta(seconds=dispatch_grace)
    lost = Job.dispatched_at.is_(None) & (Job.updated_at < grace)
    if redispatch_after is not None:
        lost = lost | (Job.dispatched_at < now - timedelta(seconds=redispatch_after))
    redispatch = list(session.execute(select(Job.id).where(Job.status == "queued", lost)).scalars())
    return ReapReport(requeued, failed, canceled, redispatch)


def _reap_one(session: Session, job_id: str, lease: str | None, condition: tuple[Any, ...], cancel: bool,
              attempts: int, max_attempts: int, worker_id: str | None, why: str, now: Any,
              buckets: tuple[list[str], list[str], list[str]]) -> None:
    """Take a running job from its attempt (if it still holds `lease` and `condition`): re-queue, fail or cancel."""
    guard = (Job.id == job_id, Job.status == "running", Job.lease == lease, *condition)
    outcome, error = lost_attempt(cancel, attempts, max_attempts, worker_id, why)
    bucket = dict(zip(("requeued", "failed", "canceled"), buckets, strict=True))[outcome]
    values: dict[str, Any] = {"error": error, **(
        {"status": "queued", "phase": "requeued", "worker_id": None, "dispatched_at": None} if outcome == "requeued"
        else {"status": outcome, "finished_at": now})}
    res = session.execute(update(Job).where(*guard).values(lease=None, updated_at=now, **values))
    if res.rowcount == 1:
        events.status(session, job_id, values["status"], error=values["error"])
        bucket.append(job_id)


def lost_attempt(cancel: bool, attempts: int, max_attempts: int, worker_id: str | None, why: str,
                 what: str = "") -> tuple[str, str]:
    """What becomes of an attempt whose worker was lost (`why`): requeued, failed (after the attempt limit) or
    canceled (one was asked for), and the reason to record; `what` names the work in it (e.g. "evaluation ")."""
    if cancel:
        return "canceled", f"{what}canceled on request ({why})"
    if attempts >= max_attempts:
        return "failed", f"{what}worker lost: {why}; gave up after {attempts} attempts (limit {max_attempts})"
    return "requeued", f"{what}attempt {attempts} lost its worker {worker_id} ({why}); re-queued"


def release(session: Session, job_id: str, lease: str, why: str) -> bool:
    """A worker shutting down hands its running job back to the queue at once (the attempt is not counted)."""
    now = utcnow()
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.lease == lease, Job.status == "running")
        .values(status="queued", phase="requeued", lease=None, worker_id=None, dispatched_at=None, updated_at=now,
                attempts=Job.attempts - 1, error=f"{why}; re-queued"))
    if res.rowcount == 1:
        events.status(session, job_id, "queued", error=f"{why}; re-queued")
    session.commit()
    return res.rowcount == 1


def mark_dispatched(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                    .values(dispatched_at=utcnow()))
    session.commit()


def is_final(status: str) -> bool:
    return status in FINAL_STATUSES
