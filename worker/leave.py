"""How a worker leaves on its own: Celery's warm shutdown now (SIGTERM: a running job hands its lease back at
its next step), and a hard exit `grace` seconds later should that shutdown still wait on a job."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

log = logging.getLogger(__name__)


def leave(grace: float, code: int) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)
    log.error("still running %g s after the warm shutdown began: exiting now (code %d)", grace, code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
