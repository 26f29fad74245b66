"""A running job's lifeline: a thread that writes heartbeat + latest progress to the registry
every `heartbeat_interval` seconds, and reads back the cancel flag and whether we still own it.

The training loop only touches memory (progress() and should_stop() are cheap), so progress
writes are throttled no matter how fast the steps are.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

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
                owner, cancel = job_states.beat(session, self.job_id, self.lease, latest, ended)
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

