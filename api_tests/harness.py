"""Real processes for end-to-end tests: uvicorn API, Celery worker(s), a fresh PostgreSQL
database and an isolated Redis key prefix per run (or a private redis-server, for tests that restart it)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("FINE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("FINE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_database() -> tuple[str, str]:
    import psycopg2

    name = f"fine_test_{secrets.token_hex(4)}"
    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    base = PG_ADMIN.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def drop_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def clear_redis_prefix(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS)
    for key in r.scan_iter(match=f"{prefix}*"):
        r.delete(key)
    r.close()


class RedisServer:
    """A private redis-server on a free port (no persistence): a test may stop and restart it."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log
        self.p: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 20) -> None:
        with open(self.log, "ab") as out:
            self.p = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--daemonize", "no"], stdout=out, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while not self.ping():
            if time.monotonic() > end or self.p.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def shutdown(self) -> None:
        """`SHUTDOWN NOSAVE`: every queued and unacknowledged message is gone, as after a crash."""
        import redis

        if self.p is None:
            return
        try:
            redis.Redis(port=self.port, socket_timeout=5).shutdown(nosave=True)
        except redis.RedisError:
            pass  # the server closes the connection as it goes
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=10)
        self.p = None


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "ab")
        self.p = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        self.ended_by_us = False  # kill() or stop() ended it (a supervisor leaves it dead)

    @property
    def pid(self) -> int:
        return self.p.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.ended_by_us = True
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Service:
    """An API process plus worker processes sharing one environment."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env = env
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api: Proc | None = None
        self.workers: list[Proc] = []
        self.client = httpx.Client(base_url=self.base, timeout=30)
        self._workers_lock = threading.RLock()
        self._supervising = threading.Event()
        self.worker_restarts = 0

    def start_api(self) -> None:
        self.api = Proc([sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1",
                         "--port", str(self.port), "--log-level", "warning"], self.env, self.home / "api.log")
        self.wait_ready()

    def start_worker(self) -> Proc:
        with self._workers_lock:
            w = Proc([sys.executable, "-m", "worker"], self.env, self.home / f"worker{len(self.workers)}.log")
            self.workers.append(w)
        return w

    def supervise_workers(self) -> None:
        """Start again every worker that exits by itself (not by kill()/stop()), as docker-compose's
        `restart: unless-stopped` does: a worker's consumer watchdog exits it for exactly that."""
        self._supervising.set()

        def loop() -> None:
            while True:
                with self._workers_lock:
                    if not self._supervising.is_set():
                        return
                    for w in [w for w in self.workers if not w.ended_by_us and w.p.poll() is not None]:
                        w.kill()  # marks it ended by us; it is gone already
                        self.worker_restarts += 1
                        self.start_worker()
                time.sleep(0.5)

        threading.Thread(target=loop, name="worker-supervisor", daemon=True).start()

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        last = ""
        while time.monotonic() < end:
            try:
                r = self.client.get("/readyz")
                if r.status_code == 200:
                    self.client.headers["Authorization"] = f"Bearer {self.admin_key()}"
                    return
                last = r.text
            except httpx.TransportError as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"API not ready after {timeout}s: {last}\n{self.api.tail() if self.api else ''}")

    def admin_key(self) -> str:
        """The admin key the API wrote to $FINE_HOME/admin.key on its first start."""
        return (self.home / "admin.key").read_text().strip()

    def users(self, *args: str) -> str:
        """Run `fine users ARGS` against this service's database; returns what it printed."""
        r = subprocess.run([sys.executable, "-m", "fine_zoo", "users", *args], env=self.env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def add_user(self, name: str, admin: bool = False) -> str:
        """`fine users add NAME [--admin]`; returns the key it printed."""
        return self.users("add", name, *(["--admin"] if admin else []))

    def client_for(self, key: str | None) -> httpx.Client:
        """A client sending `key` (None: no Authorization header)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base, timeout=30, headers=headers)

    def stop(self) -> None:
        with self._workers_lock:
            self._supervising.clear()
        self.client.close()
        for w in list(self.workers):
            w.stop()
        if self.api:
            self.api.stop()

    def wait_job(self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict:
        end = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < end:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if until(job):
                return job
            time.sleep(0.25)
        logs = "\n".join(p.tail() for p in (self.workers or [self.api]) if p is not None)
        raise AssertionError(f"job {job_id} did not reach the expected state in {timeout}s: {job}\n{logs}")

    def wait_final(self, job_id: str, timeout: float = 120) -> dict:
        return self.wait_job(job_id, lambda j: j["status"] in ("succeeded", "failed", "canceled"), timeout)

    def wait_metrics(self, job_id: str, timeout: float = 120) -> dict:
        """The job once it is final and its checkpoint's evaluation (if it has one) has ended too."""
        return self.wait_job(job_id, lambda j: j["status"] in ("succeeded", "failed", "canceled")
                             and j.get("metrics_status") not in ("pending", "running"), timeout)


def base_env(home: Path, learngene: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINE_") and k not in ("DATABASE_URL",
                                                                                         "REDIS_URL")}
    env.update({
        "FINE_HOME": str(home),
        "FINE_DEFAULT_LEARNGENE": str(learngene),
        "FINE_HEARTBEAT_INTERVAL": "0.5",
        "FINE_HEARTBEAT_TIMEOUT": "4",
        "FINE_REAPER_INTERVAL": "0.5",
        "FINE_DISPATCH_GRACE": "3",
        "FINE_MAX_ATTEMPTS": "2",
        "FINE_MAX_UPLOAD_BYTES": str(512 * 1024),
        "FINE_TORCH_THREADS": "1",
        "FINE_BOOTSTRAP_ADMIN": "1",  # every mode writes $FINE_HOME/admin.key on first start
        # webhooks: the tests' receivers listen on 127.0.0.1 (api_tests/test_webhooks.py); quick retries
        "FINE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "FINE_WEBHOOK_BACKOFF": "0.4",
        "FINE_WEBHOOK_MAX_ATTEMPTS": "4",
        "FINE_WEBHOOK_INTERVAL": "0.1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@contextmanager
def embedded_service(home: Path, learngene: Path, **extra: str) -> Iterator[Service]:
    """`fine serve`: API + the worker it supervises, one process tree. Embedded mode (SQLite, local blobs,
    filesystem broker) unless `extra` sets DATABASE_URL and REDIS_URL."""
    svc = Service(base_env(home, learngene, **extra), home)
    code = f"from service.cli import serve; serve(api_only=False, host='127.0.0.1', port={svc.port})"
    svc.api = Proc([sys.executable, "-c", code], svc.env, home / "serve.log")
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def chromium(downloads: Path | None = None, size: str = "1200,1500"):  # type: ignore[no-untyped-def]
    """Debian's headless Chromium through its chromedriver (selenium); nothing is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={size}", "--renderer-process-limit=1"):
        opts.add_argument(arg)
    if downloads is not None:
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver
