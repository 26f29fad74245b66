"""Turning registry rows into API bodies (links included)."""

from __future__ import annotations

from learngene_store.models import Job, utcnow
from service.schemas import JobOut, Progress


def timings(job: Job) -> dict[str, float]:
    """Seconds spent queued and running (the latest attempt), so far or in total; the worker's seconds
    per phase; and from POST to the checkpoint being downloadable and to its metrics."""
    now = utcnow()
    end = job.finished_at or now
    out: dict[str, float] = {"total_s": round((end - job.created_at).total_seconds(), 3)}
    if job.started_at is not None:
        out["queued_s"] = round((job.started_at - job.created_at).total_seconds(), 3)
        out["running_s"] = round((end - job.started_at).total_seconds(), 3)
    out.update({k: v for k, v in (job.timings or {}).items() if isinstance(v, int | float)})
    ckpt = job.checkpoint
    if ckpt is not None:
        out["checkpoint_s"] = round((ckpt.created_at - job.created_at).total_seconds(), 3)
        if ckpt.metrics_at is not None:
            out["metrics_s"] = round((ckpt.metrics_at - job.created_at).total_seconds(), 3)
    return out


def job_out(job: Job) -> JobOut:
    spec = dict(job.spec)
    warnings = spec.pop("warnings", [])
    links = {"self": f"/v1/jobs/{job.id}", "cancel": f"/v1/jobs/{job.id}/cancel"}
    ckpt_id = job.checkpoint.id if job.checkpoint is not None else None
    if job.result_learngene_id:
        links["learngene"] = f"/v1/learngenes/{job.result_learngene_id}"
    if ckpt_id:
        links["checkpoint"] = f"/v1/checkpoints/{ckpt_id}"
        links["download"] = f"/v1/checkpoints/{ckpt_id}/file"
    return JobOut(
        id=job.id, kind=job.kind, status=job.status, spec=spec, learngene=job.learngene_id,
        result_learngene=job.result_learngene_id, dataset=job.dataset,
        method=job.method, progress=Progress(phase=job.phase, step=job.step, total=job.total, loss=job.loss),
        attempts=job.attempts, cancel_requested=job.cancel_requested, error=job.error,
        worker_id=job.worker_id, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, heartbeat_at=job.heartbeat_at, checkpoint_id=ckpt_id,
        metrics_status=job.checkpoint.metrics_status if job.checkpoint is not None else None,
        timings=timings(job), warnings=warnings, links=links,
    )
