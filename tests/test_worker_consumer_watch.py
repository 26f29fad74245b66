"""The consumer watchdog (worker/consumer_watch.py): it fires only when messages wait on an idle worker for its
whole window, and it counts the queue's messages on the filesystem broker and on a real Redis (key prefix too)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from dispatch.broker import enqueue_job, make_celery
from dispatch.settings import DispatchSettings
from worker.consumer_watch import ConsumerWatch


class Scripted(ConsumerWatch):
    """A watch whose broker answers `answer()` (an int, or None for "unreachable")."""

    def __init__(self, answer, window: float = 0.2) -> None:  # type: ignore[no-untyped-def]
        self.dead = threading.Event()
        super().__init__(make_celery(DispatchSettings(redis_url="redis://127.0.0.1:1/0")), "gpu", window,
                         on_dead=self.dead.set)
        self.answer = answer

    def waiting(self) -> int | None:
        return self.answer()


def run_for(watch: Scripted, seconds: float = 1.0) -> bool:
    watch.start()
    dead = watch.dead.wait(seconds)
    watch.stop()
    return dead


def test_fires_when_work_waits_on_an_idle_worker() -> None:
    watch = Scripted(lambda: 2)
    assert run_for(watch) and watch.fired.is_set()


@pytest.mark.parametrize("answer", [lambda: 0, lambda: None], ids=["queue empty", "broker unreachable"])
def test_quiet_without_waiting_work(answer) -> None:  # type: ignore[no-untyped-def]
    watch = Scripted(answer)
    assert not run_for(watch) and not watch.fired.is_set()


def test_quiet_while_a_job_runs() -> None:
    watch = Scripted(lambda: 3)
    watch.job_started()
    assert not run_for(watch)


def test_a_started_job_restarts_the_window() -> None:
    """A worker that keeps taking jobs consumes, although the queue is never empty when it looks."""
    watch = Scripted(lambda: 5, window=0.4)
    done = threading.Event()

    def keep_consuming() -> None:
        while not done.wait(0.05):
            watch.job_started()
            watch.job_ended()

    consumer = threading.Thread(target=keep_consuming, daemon=True)
    consumer.start()
    assert not run_for(watch, 1.5)
    done.set()
    consumer.join(timeout=2)


def test_counts_the_filesystem_queue(tmp_path: Path) -> None:
    settings = DispatchSettings(home=tmp_path)
    app = make_celery(settings)
    watch = ConsumerWatch(app, settings.queue, 4)
    assert watch.waiting() == 0
    enqueue_job(app, settings, "job_a")
    enqueue_job(app, settings, "job_b")
    assert watch.waiting() == 2


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_counts_the_redis_queue(tmp_path: Path) -> None:
    from api_tests.harness import RedisServer

    redis = RedisServer(tmp_path / "redis.log")
    try:
        settings = DispatchSettings(redis_url=redis.url, broker_key_prefix="watch-test:")
        app = make_celery(settings)
        watch = ConsumerWatch(app, settings.queue, 4)
        assert watch.waiting() == 0  # no list in Redis yet
        enqueue_job(app, settings, "job_a")
        assert watch.waiting() == 1
        other = ConsumerWatch(make_celery(DispatchSettings(redis_url=redis.url)), settings.queue, 4)
        assert other.waiting() == 0  # another deployment's prefix
        redis.shutdown()
        assert watch.waiting() is None
    finally:
        redis.shutdown()
