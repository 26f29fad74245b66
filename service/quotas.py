"""Per-user quotas and the write rate: every limit is a setting (service/settings.py); admins are exempt.
Over a quota: 409 (active jobs: clears when one ends) or 403 (steps per day, stored bytes); over the
write rate: 429. Each answer names the limit, the usage and, where waiting helps, Retry-After."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from learngene_store.models import Checkpoint, CheckpointFile, Dataset, Job, Learngene, User, utcnow
from service.errors import Problem
from service.settings import ApiSettings

DAY = timedelta(days=1)


def check_job_quota(session: Session, settings: ApiSettings, user: User, steps: int) -> None:
    """Active jobs, training steps in the last 24 h and stored bytes, before a job is accepted."""
    if user.is_admin:
        return
    active = session.execute(select(func.count()).select_from(Job).where(
        Job.owner == user.name, Job.status.in_(("queued", "running")))).scalar_one()
    if active >= settings.quota_active_jobs:
        raise Problem(409, f"you have {active} queued or running jobs, the limit is {settings.quota_active_jobs} "
                           "(FINE_QUOTA_ACTIVE_JOBS); wait for one to finish or cancel one",
                      type_="quota-active-jobs", headers={"Retry-After": "30"}, limit=settings.quota_active_jobs,
                      usage=active)
    since = utcnow() - DAY
    recent = session.execute(select(Job.created_at, Job.total).where(Job.owner == user.name, Job.created_at >= since)
                             .order_by(Job.created_at)).all()
    used = sum(t for _, t in recent)
    limit = settings.quota_steps_per_day
    if used + steps > limit:
        freed, wait = 0, DAY.total_seconds()
        for created, total in recent:  # when enough of today's steps leave the 24 h window
            freed += total
            if used - freed + steps <= limit:
                wait = (created + DAY - utcnow()).total_seconds()
                break
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if steps <= limit else {}
        raise Problem(403, f"this job asks for {steps} training steps; you used {used} of your {limit} steps "
                           "in the last 24 h (FINE_QUOTA_STEPS_PER_DAY); ask for fewer steps or wait",
                      type_="quota-steps", headers=headers, limit=limit, usage=used)
    check_storage_quota(session, settings, user, 0)


def stored_bytes(session: Session, owner: str) -> int:
    """Bytes a user's uploads, learngene sets and checkpoint files take in the blob store."""
    datasets = session.execute(select(func.coalesce(func.sum(Dataset.bytes), 0)).where(Dataset.owner == owner))
    learngenes = session.execute(select(func.coalesce(func.sum(Learngene.bytes), 0)).where(Learngene.owner == owner))
    files = session.execute(select(func.coalesce(func.sum(CheckpointFile.bytes), 0)).join(Checkpoint)
                            .where(Checkpoint.owner == owner))
    return int(datasets.scalar_one()) + int(learngenes.scalar_one()) + int(files.scalar_one())


def check_storage_quota(session: Session, settings: ApiSettings, user: User, incoming: int) -> None:
    if user.is_admin:
        return
    used, limit = stored_bytes(session, user.name), settings.quota_stored_bytes
    if used + incoming > limit or (incoming == 0 and used >= limit):
        raise Problem(403, f"you store {used} bytes of your {limit} (FINE_QUOTA_STORED_BYTES)"
                           + (f" and this upload adds {incoming}" if incoming else "")
                           + "; ask an admin to raise the quota", type_="quota-storage", limit=limit, usage=used)


class WriteRate:
    """A sliding one-minute window of write requests per user (per API process)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, user: User) -> None:
        if user.is_admin:
            return
        now = time.monotonic()
        with self._lock:
            q = self._seen.setdefault(user.name, deque())
            while q and q[0] <= now - 60:
                q.popleft()
            if len(q) >= self.per_minute:
                wait = max(1, math.ceil(q[0] + 60 - now))
                raise Problem(429, f"more than {self.per_minute} write requests in a minute "
                                   f"(FINE_WRITE_RATE_PER_MINUTE; {len(q)} so far); retry in {wait} s",
                              type_="rate-limited", headers={"Retry-After": str(wait)},
                              limit=self.per_minute, usage=len(q))
            q.append(now)
