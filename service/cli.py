"""What `fine serve` runs (the `fine` script lives in fine_zoo/cli.py).

`serve()` with no settings is the embedded mode: API + one worker subprocess on this machine,
SQLite, a local blob directory and kombu's filesystem broker. The worker subprocess dies with
its parent: terminated on a clean exit, and otherwise by its own watch on the parent
(worker/parent_watch.py), which also ends a warm shutdown stuck in a job.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys

from service.settings import get_settings

log = logging.getLogger("service.cli")


def start_worker_subprocess(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = dict(env or os.environ)
    env["FINE_WORKER_PARENT_PID"] = str(os.getpid())
    proc = subprocess.Popen([sys.executable, "-m", "worker"], env=env)

    def _stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    atexit.register(_stop)
    return proc


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
