"""A running job's lifeline: a thread that writes heartbeat + latest progress to the registry
every `heartbeat_interval` seconds, and reads back the cancel flag and whether we still own it.

The training loop only touches memory (progress() and should_stop() are cheap), so progress
writes are throttled no matter how fast the steps are.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from learngene_store import jobs as job_states
from learngene_store.db import session_factory
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)
SHUTTING_DOWN = threading.Event()  # set on the worker's SIGTERM: running jobs hand their lease back


class Lease(threading.Thread):
    def __init__(self, settings: WorkerSettings, job_id: str, lease: str) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.settings = settings
        self.job_id = job_id
        self.lease = lease
        self._latest: dict[str, Any] | None = None
        self._ended: list[dict[str, Any]] = []  # the last progress of each phase left since the last write
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self.cancel_requested = False
        self.lost = False  # True once the registry says another attempt owns the job
        self.deadline = time.monotonic() + settings.max_job_seconds  # wall-clock limit of this attempt

    def progress(self, phase: str, step: int, total: int, loss: float | None) -> None:
        with self._lock:
            self._keep_phase_end(phase)
            self._latest = {"phase": phase, "step": int(step), "total": int(total),
                            "loss": None if loss is None else float(loss)}

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self._keep_phase_end(phase)
            self._latest = {**(self._latest or {}), "phase": phase}  # keeps the last counted step/total

    def _keep_phase_end(self, phase: str) -> None:
        """A phase that ends between two writes still gets its last step logged (under the lock)."""
        if self._latest is not None and self._latest.get("phase") != phase:
            self._ended.append(self._latest)

    def should_stop(self) -> bool:
        return self.cancel_requested or self.lost or self.timed_out or SHUTTING_DOWN.is_set()

    @property
    def timed_out(self) -> bool:
        return time.monotonic() > self.deadline

    def flush(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, None
            ended, self._ended = self._ended, []
        try:
            with session_factory(self.settings)() as session:
                owner, cancel = self.beat(session, latest, ended)
        except Exception as e:  # a database hiccup must not kill the job; the next beat retries
            log.warning("heartbeat for %s failed: %s", self.job_id, e)
            with self._lock:
                self._ended = ended + self._ended
                if self._latest is None:
                    self._latest = latest
            return
        if not owner and not self.lost:
            log.warning("job %s: lease lost (re-queued or finished elsewhere); stopping", self.job_id)
        self.lost = self.lost or not owner
        self.cancel_requested = self.cancel_requested or cancel

    def beat(self, session: Session, latest: dict[str, Any] | None,
             ended: list[dict[str, Any]]) -> tuple[bool, bool]:
        """One registry write: (still the owner, cancel requested)."""
        return job_states.beat(session, self.job_id, self.lease, latest, ended)

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.heartbeat_interval):
            self.flush()
            if self.lost:
                return

    def stop(self) -> None:
        """Stop beating and write the last progress; idempotent."""
        if self._stop_event.is_set():
            return
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)
        self.flush()

    def __enter__(self) -> Lease:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()



def worker_id(settings: WorkerSettings) -> str:
    return settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass(frozen=True)
class Ends:
    """How an attempt held by a lease ends in the registry (each a conditional write on that lease)."""

    canceled: Callable[[], object]
    failed: Callable[[str], object]  # (reason)
    released: Callable[[str], object]  # (why): back to the queue, the attempt not counted
    redispatch: Callable[[], None]  # send the released work to the broker again
    limit_hint: str  # what to ask for when an attempt runs past FINE_MAX_JOB_SECONDS


def guarded(settings: WorkerSettings, lease: Lease, body: Callable[[], str], ends: Ends, what: str) -> str:
    """Run `body` under `lease`; turn cancel, the wall-clock limit, shutdown and errors into registry
    states (unless the lease was lost). Returns what happened (for logs and tests)."""
    import torch

    from fine.training import JobCanceled  # torch is imported here, in the worker only

    torch.set_num_threads(settings.threads)
    try:
        return body()
    except JobCanceled:
        lease.stop()
        if lease.lost:
            return "abandoned: lease lost"
        if lease.cancel_requested:
            ends.canceled()
            return "canceled"
        if lease.timed_out:
            ends.failed(f"ran past the wall-clock limit of {settings.max_job_seconds:g} s per attempt "
                        f"(FINE_MAX_JOB_SECONDS); {ends.limit_hint}")
            return "failed: wall-clock limit"
        ends.released(f"worker {worker_id(settings)} shut down (SIGTERM)")
        ends.redispatch()
        return "released: worker shutting down"
    except Exception as e:
        log.error("%s failed:\n%s", what, traceback.format_exc())
        lease.stop()
        if lease.lost:
            return "abandoned: lease lost"
        ends.failed(one_line(e))
        return f"failed: {one_line(e)}"


def redispatch(settings: WorkerSettings, what: str, send: Callable[[Any], None],
               mark: Callable[[Session], None]) -> None:
    """Send released work to the broker now (`send(celery)`, then `mark` it dispatched); else the reaper
    does, after FINE_DISPATCH_GRACE."""
    from dispatch.broker import make_celery

    try:
        send(make_celery(settings))
        with session_factory(settings)() as session:
            mark(session)
    except Exception as e:
        log.warning("released %s not re-sent (%s); the reaper will", what, e)
