"""What `fine serve` runs (the `fine` script lives in fine_zoo/cli.py).

`serve()` with no settings is the embedded mode: API + one worker subprocess on this machine,
SQLite, a local blob directory and kombu's filesystem broker. serve supervises that worker: one
that exits while serve runs (its consumer watchdog's exit, a crash, the kernel's OOM killer) is
started again, as docker-compose's `restart: unless-stopped` does for the containers' workers.
The worker subprocess dies with its parent: terminated on a clean exit, and otherwise by its own
watch on the parent (worker/parent_watch.py), which also ends a warm shutdown stuck in a job.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
import time

from service.settings import get_settings

log = logging.getLogger("service.cli")


class WorkerSupervisor(threading.Thread):
    """Keeps one `python -m worker` subprocess running until stop(); a worker that keeps dying soon
    after its start is started again after a growing pause (1 s doubling to 30 s)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(name="worker-supervisor", daemon=True)
        self.env = {**(env or os.environ), "FINE_WORKER_PARENT_PID": str(os.getpid())}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.proc = self._spawn()
        self.restarts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "worker"], env=self.env)

    def run(self) -> None:
        pause = 0.5
        while True:
            started, proc = time.monotonic(), self.proc
            code = proc.wait()
            if self._stopping.is_set():
                return
            pause = 1.0 if time.monotonic() - started > 60 else min(2 * pause, 30.0)
            log.warning("worker (pid %d) exited with code %s: starting a new one in %g s", proc.pid, code, pause)
            if self._stopping.wait(pause):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.proc = self._spawn()
                self.restarts += 1

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_worker_subprocess(env: dict[str, str] | None = None) -> WorkerSupervisor:
    supervisor = WorkerSupervisor(env)
    supervisor.start()
    atexit.register(supervisor.stop)
    return supervisor


def serve(api_only: bool = False, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if not api_only:
        if not settings.embedded:
            log.info("REDIS_URL is set: starting one local worker too (use --api-only to run none)")
        # Migrate before the worker starts so the two processes do not race to create tables.
        from learngene_store.db import migrate

        settings.home.mkdir(parents=True, exist_ok=True)
        migrate(settings)
        start_worker_subprocess()
    uvicorn.run("service.app:app", host=host, port=port, log_level="info")
