"""Embedded mode: the worker leaves when its `fine serve` parent does, even in the middle of a job.

Celery answers SIGTERM with a warm shutdown that waits for the running task, which can be a
training run of many minutes. So the watch starts that warm shutdown when the parent is gone and
exits hard `grace` seconds later. An interrupted job stops beating and the reaper re-queues it,
as for any worker that died.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from worker.leave import leave

log = logging.getLogger(__name__)


def _watch(parent_pid: int, grace: float, interval: float) -> None:
    while os.getppid() == parent_pid:  # an orphan is re-parented, so getppid() changes
        time.sleep(interval)
    log.warning("parent process %d is gone: warm shutdown, hard exit in %g s", parent_pid, grace)
    leave(grace, 1)


def start_parent_watch(parent_pid: int, grace: float, interval: float = 0.5) -> None:
    threading.Thread(target=_watch, args=(parent_pid, grace, interval), name="parent-watch", daemon=True).start()
