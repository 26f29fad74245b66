"""A checkpoint's evaluation: the phase after registration that fills in its metrics (held-out loss, FD,
sample grid). It is leased like a job (learngene_store/jobs.py), on the checkpoint's row:

    pending --claim--> running --finish--> ready | failed | canceled
       ^                  |
       +---- reap --------+   (heartbeat stale, attempts left; else failed with the reason)

The worker that trained the checkpoint registers it already `running` under its own evaluation lease
(jobs.succeed with `eval_lease`), so the first evaluation needs no queue; a re-evaluation (the evaluator
died, or shut down) is a `pending` checkpoint that the reaper hands to the broker for any worker.
Nothing here touches the checkpoint's files but to add the evaluation's (samples, metrics, config):
whatever happens to an evaluation, the checkpoint stays downloadable.

Events go to the job's log (the SSE stream of the job that built the checkpoint): `evaluation` events
with `metrics_status` (and the error or attempt that goes with it) and `progress` of phase `eval`.
Each is written after an UPDATE of the job row, which orders them like the job's other events.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from learngene_store import events
from learngene_store.jobs import PROGRESS_KEYS, lost_attempt
from learngene_store.models import METRICS_UNFINISHED, Checkpoint, CheckpointFile, Job, utcnow


def new_lease() -> str:
    return secrets.token_hex(16)


def claim_values(lease: str, worker_id: str, now: datetime) -> dict[str, Any]:
    """The columns of a checkpoint whose evaluation `worker_id` holds under `lease` from `now`."""
    return {"metrics_status": "running", "eval_lease": lease, "eval_worker_id": worker_id, "eval_heartbeat_at": now,
            "metrics_error": None}


def _event(session: Session, job_id: str, kind: str, data: dict[str, Any]) -> None:
    """An event in the job's log; the job row is updated first so that its lock orders the log."""
    session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow()))
    events.record(session, job_id, kind, {k: v for k, v in data.items() if v is not None})


def evaluation_event(session: Session, job_id: str, checkpoint_id: str, metrics_status: str, **data: Any) -> None:
    _event(session, job_id, "evaluation", {"metrics_status": metrics_status, "checkpoint_id": checkpoint_id, **data})


@dataclass(frozen=True)
class EvalClaim:
    lease: str | None  # None: not ours to evaluate
    reason: str
    checkpoint: Checkpoint | None = None


def claim(session: Session, checkpoint_id: str, worker_id: str) -> EvalClaim:
    """Take a pending evaluation; a redelivered or duplicate message gets lease=None."""
    lease = new_lease()
    now = utcnow()
    res = session.execute(
        update(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.metrics_status == "pending")
        .values(**claim_values(lease, worker_id, now), eval_attempts=Checkpoint.eval_attempts + 1))
    ckpt = session.get(Checkpoint, checkpoint_id, populate_existing=True)
    if res.rowcount == 1 and ckpt is not None:
        evaluation_event(session, ckpt.job_id, ckpt.id, "running", worker=worker_id, attempt=ckpt.eval_attempts)
        session.commit()
        return EvalClaim(lease, "claimed", ckpt)
    session.commit()
    if ckpt is None:
        return EvalClaim(None, "no such checkpoint")
    return EvalClaim(None, f"metrics are {ckpt.metrics_status}")


def beat(session: Session, checkpoint_id: str, lease: str, progress: dict[str, Any] | None,
         earlier: list[dict[str, Any]] | None = None) -> tuple[bool, bool]:
    """Heartbeat of a running evaluation (+ its progress as events). Returns (still_owner, cancel_requested)."""
    res = session.execute(update(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.eval_lease == lease,
                                                   Checkpoint.metrics_status == "running")
                          .values(eval_heartbeat_at=utcnow()))
    if res.rowcount != 1:
        session.commit()
        return False, False
    job_id, cancel = session.execute(select(Checkpoint.job_id, Checkpoint.eval_cancel_requested)
                                     .where(Checkpoint.id == checkpoint_id)).one()
    for snapshot in [*(earlier or []), *([progress] if progress else [])]:
        _event(session, job_id, "progress", {k: snapshot[k] for k in PROGRESS_KEYS if k in snapshot})
    session.commit()
    return True, bool(cancel)


def _end(session: Session, checkpoint_id: str, lease: str, values: dict[str, Any], event: dict[str, Any]) -> bool:
    """Move an owned, running evaluation to its next state (and log it); False if the lease is gone."""
    now = utcnow()
    res = session.execute(update(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.eval_lease == lease,
                                                   Checkpoint.metrics_status == "running")
                          .values(eval_lease=None, eval_heartbeat_at=now, **values))
    if res.rowcount != 1:
        session.rollback()
        return False
    job_id = session.execute(select(Checkpoint.job_id).where(Checkpoint.id == checkpoint_id)).scalar_one()
    evaluation_event(session, job_id, checkpoint_id, values["metrics_status"], **event)
    session.commit()
    return True


def finish(session: Session, checkpoint_id: str, lease: str, metrics: dict[str, Any], config: dict[str, Any],
           files: list[dict[str, Any]], timings: dict[str, float]) -> bool:
    """Metrics ready: store them, add (or replace) the evaluation's files, add its seconds to the job's timings."""
    now = utcnow()
    res = session.execute(update(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.eval_lease == lease,
                                                   Checkpoint.metrics_status == "running")
                          .values(metrics_status="ready", metrics=metrics, config=config, metrics_error=None,
                                  metrics_at=now, eval_lease=None, eval_heartbeat_at=now))
    if res.rowcount != 1:  # the lease is gone (re-queued elsewhere) or the checkpoint was deleted
        session.rollback()
        return False
    ckpt = session.get(Checkpoint, checkpoint_id, populate_existing=True)
    assert ckpt is not None
    replaced = {f["format"] for f in files}
    ckpt.files = [f for f in ckpt.files if f.format not in replaced]  # delete-orphan removes the old rows
    session.flush()  # deletes before the inserts of the same (checkpoint, format) keys
    ckpt.files.extend(CheckpointFile(**f) for f in files)
    job = session.get(Job, ckpt.job_id, populate_existing=True)
    if job is not None:
        job.timings = {**(job.timings or {}), **timings}
    evaluation_event(session, ckpt.job_id, checkpoint_id, "ready")
    session.commit()
    return True


def fail(session: Session, checkpoint_id: str, lease: str, error: str) -> bool:
    """The evaluation failed; the checkpoint stays as it was registered (downloadable), metrics `failed`."""
    return _end(session, checkpoint_id, lease, {"metrics_status": "failed", "metrics_error": error,
                                                "metrics_at": utcnow()}, {"error": error})


def mark_canceled(session: Session, checkpoint_id: str, lease: str) -> bool:
    why = "evaluation canceled on request"
    return _end(session, checkpoint_id, lease, {"metrics_status": "canceled", "metrics_error": why,
                                                "metrics_at": utcnow()}, {"error": why})


def release(session: Session, checkpoint_id: str, lease: str, why: str) -> bool:
    """An evaluator shutting down hands the evaluation back (pending, the attempt not counted)."""
    note = f"{why}; evaluation re-queued"
    return _end(session, checkpoint_id, lease, {"metrics_status": "pending", "eval_worker_id": None,
                                                "eval_dispatched_at": None, "metrics_error": note,
                                                "eval_attempts": Checkpoint.eval_attempts - 1}, {"error": note})


def request_cancel(session: Session, job_id: str) -> bool:
    """Cancel the evaluation of the job's checkpoint: a pending one at once, a running one at its next
    step. False when there is no unfinished evaluation to cancel."""
    ckpt = session.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalar_one_or_none()
    if ckpt is None or ckpt.metrics_status not in METRICS_UNFINISHED:
        return False
    now = utcnow()
    why = "evaluation canceled on request"
    res = session.execute(update(Checkpoint).where(Checkpoint.id == ckpt.id, Checkpoint.metrics_status == "pending")
                          .values(metrics_status="canceled", metrics_error=why, metrics_at=now,
                                  eval_cancel_requested=True))
    if res.rowcount == 1:
        evaluation_event(session, job_id, ckpt.id, "canceled", error=why)
        session.commit()
        return True
    res = session.execute(update(Checkpoint).where(Checkpoint.id == ckpt.id, Checkpoint.metrics_status == "running",
                                                   Checkpoint.eval_cancel_requested.is_(False))
                          .values(eval_cancel_requested=True))
    if res.rowcount == 1:
        _event(session, job_id, "cancel", {"cancel_requested": True, "checkpoint_id": ckpt.id})
    session.commit()
    return True


def mark_dispatched(session: Session, checkpoint_id: str) -> None:
    session.execute(update(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.metrics_status == "pending")
                    .values(eval_dispatched_at=utcnow()))
    session.commit()


@dataclass(frozen=True)
class EvalReapReport:
    requeued: list[str]  # checkpoint ids whose evaluator went silent, pending again
    failed: list[str]
    canceled: list[str]
    dispatch: list[str]  # pending evaluations to send to the broker (requeued ones included)


def reap(session: Session, heartbeat_timeout: float, max_attempts: int, dispatch_grace: float,
         redispatch_after: float | None = None) -> EvalReapReport:
    """Running evaluations whose evaluator went silent: pending again (attempts left) or failed, with the
    reason; and the pending ones that no broker message carries (never sent, or sent long ago)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=heartbeat_timeout)
    requeued: list[str] = []
    failed: list[str] = []
    canceled: list[str] = []
    stale = session.execute(select(Checkpoint.id, Checkpoint.job_id, Checkpoint.eval_lease, Checkpoint.eval_attempts,
                                   Checkpoint.eval_worker_id, Checkpoint.eval_cancel_requested)
                            .where(Checkpoint.metrics_status == "running", Checkpoint.eval_heartbeat_at < cutoff)).all()
    for ckpt_id, job_id, lease, attempts, worker, cancel in stale:
        why = f"no heartbeat for {heartbeat_timeout:g} s from {worker}"
        outcome, error = lost_attempt(cancel, attempts, max_attempts, worker, why, "evaluation ")
        bucket = {"requeued": requeued, "failed": failed, "canceled": canceled}[outcome]
        values: dict[str, Any] = {"metrics_error": error, **(
            {"metrics_status": "pending", "eval_worker_id": None, "eval_dispatched_at": None} if outcome == "requeued"
            else {"metrics_status": outcome, "metrics_at": now})}
        res = session.execute(update(Checkpoint).where(Checkpoint.id == ckpt_id, Checkpoint.eval_lease == lease,
                                                       Checkpoint.metrics_status == "running",
                                                       Checkpoint.eval_heartbeat_at < cutoff)
                              .values(eval_lease=None, eval_heartbeat_at=now, **values))
        if res.rowcount == 1:
            evaluation_event(session, job_id, ckpt_id, values["metrics_status"], error=values["metrics_error"])
            bucket.append(ckpt_id)
    session.commit()
    queued_at = Checkpoint.eval_heartbeat_at  # set when an evaluation becomes pending again
    lost = Checkpoint.eval_dispatched_at.is_(None) & (queued_at.is_(None) | (queued_at < now - timedelta(
        seconds=dispatch_grace)))
    if redispatch_after is not None:
        lost = lost | (Checkpoint.eval_dispatched_at < now - timedelta(seconds=redispatch_after))
    waiting = session.execute(select(Checkpoint.id).where(Checkpoint.metrics_status == "pending", lost)).scalars()
    return EvalReapReport(requeued, failed, canceled, sorted(set(requeued) | set(waiting)))
