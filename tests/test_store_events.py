"""A job's event log: every transition writes one numbered event in its own transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from learngene_store import events, jobs
from tests.test_store_jobs import CKPT, FILES, new_job, session  # noqa: F401  (the fixture)


def _log(s: Session, job_id: str, after: int = 0) -> list[tuple[int, str, dict]]:
    return [(e.seq, e.kind, e.data) for e in events.after(s, job_id, after)]


def test_a_job_logs_status_and_progress_in_order(session: Session) -> None:  # noqa: F811
    job_id = new_job(session)
    lease = jobs.claim(session, job_id, "w1").lease
    assert lease
    jobs.beat(session, job_id, lease, {"phase": "sigma", "step": 1, "total": 3, "loss": 0.5})
    jobs.beat(session, job_id, lease, None)  # a bare heartbeat is no event
    jobs.request_cancel(session, job_id)
    jobs.request_cancel(session, job_id)  # asked twice: one event
    jobs.beat(session, job_id, lease, {"phase": "sigma", "step": 3, "total": 3, "loss": 0.25})
    ckpt = jobs.succeed(session, job_id, lease, CKPT, FILES)
    jobs.beat(session, job_id, lease, {"phase": "sigma", "step": 4, "total": 3, "loss": 0.1})  # lease gone: none
    log = _log(session, job_id)
    assert [seq for seq, _, _ in log] == [1, 2, 3, 4, 5]
    assert [(kind, d.get("status") or d.get("step") or "cancel") for _, kind, d in log] == [
        ("status", "running"), ("progress", 1), ("cancel", "cancel"), ("progress", 3), ("status", "succeeded")]
    assert log[-1][2]["checkpoint_id"] == ckpt
    assert _log(session, job_id, after=3) == log[3:]


def test_cancel_and_reap_are_logged(session: Session) -> None:  # noqa: F811
    queued = new_job(session)
    jobs.cancel_queued(session, queued)
    assert [d["status"] for _, _, d in _log(session, queued)] == ["canceled"]
    lost = new_job(session)
    jobs.claim(session, lost, "w1")
    report = jobs.reap(session, heartbeat_timeout=-1, max_attempts=3, dispatch_grace=60)
    assert report.requeued == [lost]
    assert [(d["status"], "lost its worker" in d.get("error", "")) for _, _, d in _log(session, lost)] == [
        ("running", False), ("queued", True)]
