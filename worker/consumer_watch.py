"""The consumer watchdog: a worker whose Celery consumer has stopped taking jobs exits (code 75), so that
what supervises it (`fine serve`, docker-compose's `restart: unless-stopped`) starts a fresh one.

Why: after a broker connection loss Celery's consumer can stay alive and consume nothing, with no error
(celery/celery#9054, #8030, #10302). The case seen here (Redis, one job at a time, late acks): a job ends
while Redis is down; kombu logs its failed ack ("Couldn't ack … ConnectionError") and swallows it, so the
message stays counted as delivered in the channel's QoS; with a prefetch of one the channel never asks Redis
for another message, and no connection error reaches the consumer to make it reconnect. No broker setting
changes that (tried: `worker_cancel_long_running_tasks_on_connection_loss`, `broker_channel_error_retry`,
`broker_heartbeat`, the transport's `health_check_interval`, `socket_timeout`, `socket_keepalive`).

The watch judges by what matters, not by that mechanism: while no job runs in this process it asks the broker,
on a connection of its own, how many messages wait in the queue. Messages waiting at every check for
`FINE_CONSUMER_WATCHDOG` seconds while this worker, idle, started nothing mean its consumer is dead. An idle
worker holds no job, so leaving loses nothing: the messages wait for its successor or another worker, and a
job whose message the broker lost is sent again by the reaper (`FINE_REDISPATCH_AFTER`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from celery import Celery

from worker.leave import leave

log = logging.getLogger(__name__)
EXIT_CODE = 75  # EX_TEMPFAIL: start me again


class ConsumerWatch(threading.Thread):
    def __init__(self, app: Celery, queue: str, window: float, grace: float = 30.0,
                 on_dead: Callable[[], None] | None = None) -> None:
        super().__init__(name="consumer-watch", daemon=True)
        self.app = app
        self.queue = queue
        self.window = window
        self.interval = min(5.0, window / 4)
        self.grace = grace
        self.on_dead = on_dead or (lambda: leave(self.grace, EXIT_CODE))
        self._lock = threading.Lock()
        self._jobs_running = 0  # jobs running in this process now
        self._jobs_started = 0  # jobs ever started here: a change means the consumer works
        self.fired = threading.Event()
        self._halt = threading.Event()

    def job_started(self) -> None:
        with self._lock:
            self._jobs_running += 1
            self._jobs_started += 1

    def job_ended(self) -> None:
        with self._lock:
            self._jobs_running -= 1

    def waiting(self) -> int | None:
        """Messages waiting in the queue; None when the broker does not answer (Celery is reconnecting)."""
        try:
            with self.app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, timeout=min(5.0, self.window))
                # not passive: kombu's Redis existence check ignores the key prefix; declaring is a no-op there
                return int(conn.default_channel.queue_declare(queue=self.queue).message_count)
        except Exception as e:
            log.debug("consumer watch: broker check failed: %s", e)
            return None

    def run(self) -> None:
        since: float | None = None  # when the queue was first seen waiting on this idle worker
        seen = -1
        while not self._halt.wait(self.interval):
            with self._lock:
                running, started = self._jobs_running, self._jobs_started
            if running or started != seen:
                since, seen = None, started
                continue
            waiting = self.waiting()
            if not waiting:
                since = None
                continue
            now = time.monotonic()
            since = now if since is None else since
            if now - since >= self.window:
                log.critical("consumer watchdog: %d message(s) have waited in queue %r for %.0f s while this worker, "
                             "idle, took none: its Celery consumer has stopped consuming (broker connection lost?). "
                             "Exiting with code %d so that its supervisor starts a fresh worker",
                             waiting, self.queue, now - since, EXIT_CODE)
                self.fired.set()
                self.on_dead()
                return

    def stop(self) -> None:
        self._halt.set()
