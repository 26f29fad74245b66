"""Job state transitions on a real (SQLite) registry: claims, leases, reaping, one checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fine_zoo.settings import Settings
from learngene_store import jobs
from learngene_store.catalog import ensure_builtin_datasets
from learngene_store.db import migrate, session_factory
from learngene_store.models import Checkpoint, Job, Learngene


@pytest.fixture()
def session(tmp_path: Path) -> Session:
    settings = Settings(home=tmp_path)
    migrate(settings)
    s = session_factory(settings)()
    ensure_builtin_datasets(s)
    s.add(Learngene(id="lg", sha256="a" * 64, bytes=1, hidden_size=64, head_dim=32, depth=2, rank=4, patch_size=4,
                    image_size=8, in_channels=1, num_classes=10, source_dataset="digits", steps=1, widths=[64],
                    meta={}))
    s.commit()
    return s


def new_job(s: Session) -> str:
    job = Job(request_hash="h", spec={}, learngene_id="lg", dataset="digits", method="fine")
    s.add(job)
    s.commit()
    return job.id


CKPT = {"learngene_id": "lg", "method": "fine", "dataset": "digits", "depth": 2, "hidden_size": 64,
        "config": {}, "metrics": {}}
FILES = [{"format": "dense", "filename": "model.safetensors", "media_type": "application/octet-stream",
          "sha256": "b" * 64, "bytes": 10}]


def test_only_one_claim_wins(session: Session) -> None:
    job_id = new_job(session)
    first = jobs.claim(session, job_id, "w1")
    second = jobs.claim(session, job_id, "w2")
    assert first.lease and second.lease is None and "running on w1" in second.reason
    assert session.get(Job, job_id).attempts == 1


def test_success_registers_one_checkpoint(session: Session) -> None:
    job_id = new_job(session)
    lease = jobs.claim(session, job_id, "w1").lease
    assert lease
    ckpt = jobs.succeed(session, job_id, lease, CKPT, FILES)
    assert ckpt is not None
    assert jobs.succeed(session, job_id, lease, CKPT, FILES) is None  # lease spent: no second checkpoint
    assert jobs.claim(session, job_id, "w2").reason == "job is succeeded"
    n = session.execute(select(func.count()).select_from(Checkpoint).where(Checkpoint.job_id == job_id)).scalar()
    assert n == 1


def test_reaper_requeues_then_fails(session: Session) -> None:
    job_id = new_job(session)
    lease = jobs.claim(session, job_id, "w1").lease
    time.sleep(0.05)
    report = jobs.reap(session, heartbeat_timeout=0.01, max_attempts=2, dispatch_grace=60)
    assert report.requeued == [job_id]
    job = session.get(Job, job_id, populate_existing=True)
    assert job.status == "queued" and "lost its worker w1" in job.error
    assert jobs.beat(session, job_id, lease, None) == (False, False)  # the old attempt lost its lease
    lease2 = jobs.claim(session, job_id, "w2").lease
    assert lease2
    time.sleep(0.05)
    report = jobs.reap(session, heartbeat_timeout=0.01, max_attempts=2, dispatch_grace=60)
    assert report.failed == [job_id]
    job = session.get(Job, job_id, populate_existing=True)
    assert job.status == "failed" and "gave up after 2 attempts" in job.error


def test_fresh_heartbeat_is_not_reaped(session: Session) -> None:
    job_id = new_job(session)
    lease = jobs.claim(session, job_id, "w1").lease
    assert jobs.beat(session, job_id, lease, {"phase": "sigma", "step": 3, "total": 10, "loss": 0.5}) == (True, False)
    assert jobs.reap(session, heartbeat_timeout=60, max_attempts=2, dispatch_grace=60).requeued == []
    assert session.get(Job, job_id, populate_existing=True).step == 3


def test_cancel(session: Session) -> None:
    queued = new_job(session)
    assert jobs.request_cancel(session, queued).status == "canceled"
    assert jobs.claim(session, queued, "w1").lease is None
    running = new_job(session)
    lease = jobs.claim(session, running, "w1").lease
    assert jobs.request_cancel(session, running).status == "running"
    assert jobs.beat(session, running, lease, None) == (True, True)
    assert jobs.mark_canceled(session, running, lease)


def test_undispatched_jobs_are_listed_for_redispatch(session: Session) -> None:
    job_id = new_job(session)
    time.sleep(0.05)
    assert jobs.reap(session, 60, 2, dispatch_grace=0.01).redispatch == [job_id]
    jobs.mark_dispatched(session, job_id)
    assert jobs.reap(session, 60, 2, dispatch_grace=0.01).redispatch == []


def test_dispatched_but_lost_message_is_sent_again(session: Session) -> None:
    job_id = new_job(session)
    jobs.mark_dispatched(session, job_id)
    time.sleep(0.05)
    assert jobs.reap(session, 60, 2, dispatch_grace=60, redispatch_after=60).redispatch == []
    assert jobs.reap(session, 60, 2, dispatch_grace=60, redispatch_after=0.01).redispatch == [job_id]


def test_hung_job_is_requeued_then_failed_with_the_reason(session: Session) -> None:
    job_id = new_job(session)
    lease = jobs.claim(session, job_id, "w1").lease
    assert jobs.beat(session, job_id, lease, {"phase": "sigma", "step": 3, "total": 10, "loss": 0.5})[0]
    time.sleep(0.05)
    assert jobs.beat(session, job_id, lease, {"phase": "sigma", "step": 4, "total": 10, "loss": 0.5})[0]
    assert jobs.reap(session, 60, 2, 60, stall_timeout=0.04).requeued == []  # step 4 is fresh progress
    time.sleep(0.05)
    assert jobs.beat(session, job_id, lease, {"phase": "sigma", "step": 4, "total": 10, "loss": 0.5})[0]
    assert jobs.beat(session, job_id, lease, None)[0]  # alive, but stuck at step 4
    assert jobs.reap(session, 60, 2, 60, stall_timeout=0.04).requeued == [job_id]
    job = session.get(Job, job_id, populate_existing=True)
    assert job.status == "queued" and "hung: no progress" in job.error and "step 4" in job.error
    assert jobs.beat(session, job_id, lease, None) == (False, False)  # the hung attempt stops at its next beat
    jobs.claim(session, job_id, "w2")
    time.sleep(0.05)
    report = jobs.reap(session, 60, 2, 60, stall_timeout=0.01)
    assert report.failed == [job_id]
    assert "gave up after 2 attempts" in session.get(Job, job_id, populate_existing=True).error


def test_release_requeues_at_once_without_spending_an_attempt(session: Session) -> None:
    job_id = new_job(session)
    lease = jobs.claim(session, job_id, "w1").lease
    assert jobs.release(session, job_id, lease, "worker w1 shut down (SIGTERM)")
    job = session.get(Job, job_id, populate_existing=True)
    assert job.status == "queued" and job.attempts == 0 and job.lease is None and "SIGTERM" in job.error
    assert not jobs.release(session, job_id, lease, "again")
    assert jobs.reap(session, 60, 2, dispatch_grace=0).redispatch == [job_id]
