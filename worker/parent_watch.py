"""Embedded mode: the worker leaves when its `fine serve` parent does, even in the middle of a job.

PR_SET_PDEATHSIG already sends SIGTERM on Linux, but Celery answers SIGTERM with a warm shutdown
that waits for the running task, which can be a training run of many minutes. This thread bounds
that: warm shutdown first, a hard exit `grace` seconds later. An interrupted job stops beating and
the reaper re-queues it, as for any worker that died.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)


class ParentWatch(threading.Thread):
    def __init__(self, parent_pid: int, grace: float, interval: float = 0.5) -> None:
        super().__init__(name="parent-watch", daemon=True)
        self.parent_pid = parent_pid
        self.grace = grace
        self.interval = interval
        self._stop_event = threading.Event()

    def parent_alive(self) -> bool:
        # Once the parent dies we are re-parented, so getppid() changes; no polling of other pids.
        return os.getppid() == self.parent_pid

    def run(self) -> None:
        while self.parent_alive():
            if self._stop_event.wait(self.interval):
                return
        log.warning("parent process %d is gone: warm shutdown, hard exit in %g s", self.parent_pid, self.grace)
        os.kill(os.getpid(), signal.SIGTERM)  # a no-op repeat where PDEATHSIG already did it
        if self._stop_event.wait(self.grace):
            return
        log.error("still running %g s after the parent died: exiting now", self.grace)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    def stop(self) -> None:
        self._stop_event.set()
