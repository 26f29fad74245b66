"""A short run of the fault benchmark (api_tests/bench_faults.py): one SIGKILL mid-job and concurrent idempotent
submissions from two users on the suite's service, and one Redis restart mid-job on a service with a Redis of its
own (the suite's Redis is shared); nothing lost, stuck or duplicated, and only documented answers."""

from __future__ import annotations

import time
from pathlib import Path

from api_tests.bench_faults import JOB, concurrent_round, kill_round, outcome, private_redis_restart, restart_round
from api_tests.harness import RedisServer, Service, create_database, drop_database, embedded_service


def assert_clean(r: dict) -> None:
    assert r["submitted"] == r["succeeded"] > 0, r
    assert r["lost"] == r["stuck"] == r["duplicate checkpoints"] == r["undocumented answers"] == 0, r


def test_short_fault_run(service: Service) -> None:
    rounds = [kill_round(service, 1), concurrent_round(service, 6, 2)]
    deadline = time.monotonic() + 240
    for r in (outcome(service, rnd, deadline) for rnd in rounds):
        assert_clean(r)
    assert outcome(service, rounds[0], deadline)["re-run (attempts > 1)"] == 1


def test_redis_restart_mid_job(tmp_path: Path, toy_learngene: Path) -> None:
    """`fine serve` with a private Redis, restarted (SHUTDOWN NOSAVE) while a job runs and kept down until that
    job has ended: its late ack fails, after which Celery's consumer consumes nothing (celery/celery#9054). The
    worker's consumer watchdog exits it, serve starts a new worker, the reaper re-sends the jobs whose messages
    Redis lost, and every job succeeds once. Without the watchdog (FINE_CONSUMER_WATCHDOG=0) the jobs stay queued."""
    redis = RedisServer(tmp_path / "redis.log")
    db, url = create_database()
    try:
        with embedded_service(tmp_path, toy_learngene, DATABASE_URL=url, REDIS_URL=redis.url,
                              FINE_REDISPATCH_AFTER="5", FINE_CONSUMER_WATCHDOG="3", FINE_HEARTBEAT_TIMEOUT="30") as svc:
            small = {**JOB, "sigma_steps": 20}
            rnd = restart_round(svc, "Redis", private_redis_restart(svc, redis, small), before=2, after=2, job=small)
            r = outcome(svc, rnd, time.monotonic() + 300)
    finally:
        redis.shutdown()
        drop_database(db)
    assert r["submitted"] == 5, r
    assert_clean(r)
