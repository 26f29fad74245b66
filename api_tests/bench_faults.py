"""Fault benchmark: real Redis, a fresh PostgreSQL database, one API and two worker processes, small real jobs.

Rounds: SIGKILL of a worker mid-job (N times); a worker frozen with SIGSTOP past its lease, then resumed
(the zombie must not register a second checkpoint); concurrent submissions from several users; a Redis
restart mid-run, either of a private redis-server the benchmark starts (`--own-redis`: kept down until the
running job has ended, so that its late ack meets no broker, and restarted on the same port) or by a command
of yours; and, when given its command, a PostgreSQL restart mid-run. Commands restart shared servers: never
run them on a machine where others use those servers. Workers that exit by themselves (a consumer watchdog's
exit, worker/consumer_watch.py) are started again, as docker-compose's restart policy does. Reports per round:
submitted, succeeded, failed with a reason, lost, stuck, duplicate checkpoints and answers other than the
documented ones.

    python -m api_tests.bench_faults [--kills 10] [--concurrent 50] [--users 5] [--rounds kill,zombie,...]
        [--own-redis | --redis-restart 'CMD'] [--postgres-restart 'CMD'] [--out bench/results/faults.md]

(It lives in api_tests/, not bench/, because bench/ may import only `fine`; it drives the processes that
api_tests/harness.py starts.)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg2

from api_tests.conftest import TINY
from api_tests.harness import (
    REDIS,
    Proc,
    RedisServer,
    Service,
    base_env,
    clear_redis_prefix,
    create_database,
    drop_database,
)

JOB = {**TINY, "sigma_steps": 150}
DOCUMENTED = {200, 201, 202, 400, 401, 403, 404, 409, 413, 415, 422, 429, 503}
FINAL = ("succeeded", "failed", "canceled")
ROUNDS = "kill,zombie,redis,postgres,concurrent"
OUT = Path("bench/results/faults.md")
SETTINGS = {"FINE_MAX_ATTEMPTS": "3", "FINE_QUOTA_ACTIVE_JOBS": "100", "FINE_WRITE_RATE_PER_MINUTE": "1000",
            "FINE_REDISPATCH_AFTER": "30", "FINE_CONSUMER_WATCHDOG": "15"}


@dataclass
class Round:
    name: str
    jobs: list[str] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    lost_submissions: int = 0  # requests that got neither a job id nor a documented refusal

    def post(self, client: httpx.Client, body: dict, key: str | None = None) -> None:
        headers = {"Idempotency-Key": key} if key else {}
        for attempt in range(5):
            try:
                r = client.post("/v1/jobs", json=body, headers=headers)
            except httpx.TransportError:
                time.sleep(1 + attempt)
                continue
            self.answers[r.status_code] += 1
            if r.status_code == 202:
                self.jobs.append(r.json()["id"])
                return
            if r.status_code not in (429, 503):
                break
            time.sleep(float(r.headers.get("retry-after", "1")))
        self.lost_submissions += 1


def worker_of(svc: Service, job: dict) -> Proc | None:
    pid = int(str(job.get("worker_id") or ":0").rsplit(":", 1)[1] or 0)
    return next((w for w in svc.workers if w.pid == pid and w.p.poll() is None), None)


def wait_running(svc: Service, job_id: str, timeout: float = 120) -> dict:
    return svc.wait_job(job_id, lambda j: j["status"] == "running" and j["progress"]["step"] > 0
                        and j["progress"]["phase"] == "sigma", timeout)


KILL_SIGMA_STEPS = 1000  # long enough to be caught mid-run by a 0.25 s poll on an idle machine (150 steps took 0.4 s)


def kill_round(svc: Service, n: int) -> Round:
    rnd = Round(f"SIGKILL a worker mid-job x{n}")
    for i in range(n):
        rnd.post(svc.client, {**JOB, "sigma_steps": KILL_SIGMA_STEPS, "seed": 100 + i})
        job = wait_running(svc, rnd.jobs[-1])
        victim = worker_of(svc, job)
        if victim is not None:
            victim.kill(signal.SIGKILL)
            svc.start_worker()
    return rnd


def zombie_round(svc: Service, freeze: float) -> Round:
    rnd = Round("SIGSTOP a worker past its lease, then SIGCONT")
    rnd.post(svc.client, {**JOB, "sigma_steps": 400, "seed": 200})
    job = wait_running(svc, rnd.jobs[-1])
    victim = worker_of(svc, job)
    if victim is not None:
        victim.p.send_signal(signal.SIGSTOP)
        time.sleep(freeze)
        victim.p.send_signal(signal.SIGCONT)
    return rnd


Restart = Callable[[Round], None]


def restart_round(svc: Service, name: str, restart: Restart, before: int = 3, after: int = 3, job: dict = JOB) -> Round:
    """`before` jobs, the restart once the first one runs, then `after` more; all but the first are `job`."""
    rnd = Round(f"{name} restarted mid-run")
    for i in range(before):
        rnd.post(svc.client, {**(job if i else JOB), "seed": 300 + i})
    wait_running(svc, rnd.jobs[0], timeout=300)
    restart(rnd)
    for i in range(after):
        rnd.post(svc.client, {**job, "seed": 310 + i})
    return rnd


def shell(command: str) -> Restart:
    def restart(rnd: Round) -> None:
        subprocess.run(command, shell=True, check=True, timeout=120)

    return restart


def private_redis_restart(svc: Service, redis: RedisServer, job: dict = JOB) -> Restart:
    """SHUTDOWN NOSAVE of the service's own Redis while a job runs; one submission while it is down; back on
    the same port once the running job has stopped running (its late ack fails: the case that stops Celery's
    consumer)."""
    def restart(rnd: Round) -> None:
        redis.shutdown()
        svc.wait_job(rnd.jobs[0], lambda j: j["status"] != "running", timeout=600)
        rnd.post(svc.client, {**job, "seed": 320})
        time.sleep(1)
        redis.start()

    return restart


def concurrent_round(svc: Service, n: int, users: int) -> Round:
    rnd = Round(f"{n} concurrent submissions from {users} users")
    clients = [svc.client_for(svc.add_user(f"bench-{i}-{secrets.token_hex(2)}")) for i in range(users)]
    lock = threading.Lock()

    def one(i: int) -> None:
        part = Round("")
        part.post(clients[i % users], {**JOB, "sigma_steps": 20, "seed": 400 + i}, key=f"bench-{i}")
        part.post(clients[i % users], {**JOB, "sigma_steps": 20, "seed": 400 + i}, key=f"bench-{i}")  # replay
        with lock:
            rnd.jobs.extend(dict.fromkeys(part.jobs))
            rnd.answers.update(part.answers)
            rnd.lost_submissions += part.lost_submissions

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return rnd


def outcome(svc: Service, rnd: Round, deadline: float) -> dict:
    states: dict[str, dict] = {}
    for job_id in rnd.jobs:
        while True:
            try:
                job = svc.client.get(f"/v1/jobs/{job_id}").json()
            except httpx.TransportError:
                job = {}
            if job.get("status") in FINAL or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        states[job_id] = job
    with psycopg2.connect(svc.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT job_id, count(*) FROM checkpoints WHERE job_id = ANY(%s) GROUP BY job_id", (rnd.jobs,))
        per_job = dict(cur.fetchall())
    failed = [j for j in states.values() if j.get("status") == "failed"]
    return {"round": rnd.name, "submitted": len(rnd.jobs) + rnd.lost_submissions,
            "succeeded": sum(j.get("status") == "succeeded" for j in states.values()),
            "re-run (attempts > 1)": sum(j.get("attempts", 0) > 1 for j in states.values()),
            "failed with a reason": sum(bool(j.get("error")) for j in failed),
            "failed without": sum(not j.get("error") for j in failed),
            "lost": rnd.lost_submissions + sum(not j for j in states.values()),
            "stuck": sum(bool(j) and j.get("status") not in FINAL for j in states.values()),
            "duplicate checkpoints": sum(n - 1 for n in per_job.values() if n > 1),
            "undocumented answers": sum(n for s, n in rnd.answers.items() if s not in DOCUMENTED),
            "answers": dict(sorted(rnd.answers.items())), "errors": sorted({j["error"][:90] for j in failed})}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--rounds", default=ROUNDS,
                    help="which rounds, comma-separated (redis and postgres need their restart)")
    ap.add_argument("--own-redis", action="store_true",
                    help="start a private redis-server on a free port and restart that one in the Redis round")
    ap.add_argument("--redis-restart", help="shell command restarting Redis (omitted: round skipped)")
    ap.add_argument("--postgres-restart", help="shell command restarting PostgreSQL (omitted: round skipped)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    from api_tests.toy_learngene import build

    wanted = set(a.rounds.split(","))
    t0 = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="fine-faults-"))
    db, url = create_database()
    prefix = f"fine_faults_{secrets.token_hex(4)}:"
    redis = RedisServer(home / "redis.log") if a.own_redis else None
    env = base_env(home, build(home / "toy"), DATABASE_URL=url, REDIS_URL=redis.url if redis else REDIS,
                   FINE_BROKER_KEY_PREFIX=prefix, **SETTINGS)
    svc = Service(env, home)
    results = []
    try:
        svc.start_api()
        svc.start_worker()
        svc.start_worker()
        svc.supervise_workers()
        rounds = []
        if "kill" in wanted:
            rounds.append(kill_round(svc, a.kills))
        if "zombie" in wanted:
            rounds.append(zombie_round(svc, float(env["FINE_HEARTBEAT_TIMEOUT"]) + 4))
        redis_restart = private_redis_restart(svc, redis) if redis else shell(a.redis_restart) if a.redis_restart else None
        if "redis" in wanted and redis_restart:
            rounds.append(restart_round(svc, "Redis", redis_restart))
        if "postgres" in wanted and a.postgres_restart:
            rounds.append(restart_round(svc, "PostgreSQL", shell(a.postgres_restart)))
        if "concurrent" in wanted:
            rounds.append(concurrent_round(svc, a.concurrent, a.users))
        deadline = time.monotonic() + 600
        results = [outcome(svc, r, deadline) for r in rounds]
    finally:
        svc.stop()
        if redis:
            redis.shutdown()
        else:
            clear_redis_prefix(prefix)
        drop_database(db)
    a.worker_restarts = svc.worker_restarts
    a.settings = {k: env[k] for k in ("FINE_HEARTBEAT_TIMEOUT", *SETTINGS)}
    report(results, a, time.monotonic() - t0)
    return results


def report(results: list[dict], a: argparse.Namespace, seconds: float) -> None:
    cols = ["submitted", "succeeded", "re-run (attempts > 1)", "failed with a reason", "failed without", "lost", "stuck",
            "duplicate checkpoints", "undocumented answers"]
    restarts = "".join(f" --{flag} {shlex.quote(cmd)}" for flag, cmd in (("redis-restart", a.redis_restart),
                                                                          ("postgres-restart", a.postgres_restart)) if cmd)
    if a.own_redis:
        restarts = " --own-redis" + restarts
    if a.rounds != ROUNDS:
        restarts = f" --rounds {a.rounds}" + restarts
    if a.out != OUT:
        restarts += f" --out {a.out}"
    settings = ", ".join(f"{k}={v}" for k, v in a.settings.items())
    broker = "a private redis-server" if a.own_redis else "real Redis"
    lines = ["# Fault benchmark", "", f"Command: `python -m api_tests.bench_faults --kills {a.kills} --concurrent "
             f"{a.concurrent} --users {a.users}{restarts}` ({seconds:.0f} s, load average {os.getloadavg()[0]:.1f} on "
             f"{os.cpu_count()} cores at the end; {broker}, PostgreSQL, one API, two workers started again when they "
             f"exit by themselves ({a.worker_restarts} times); {settings}; jobs: {json.dumps(JOB)}).", "",
             "| round | " + " | ".join(cols) + " | answers |", "| --- |" + " --- |" * (len(cols) + 1)]
    for r in results:
        lines.append(f"| {r['round']} | " + " | ".join(str(r[c]) for c in cols) + f" | {r['answers']} |")
    wanted = a.rounds.split(",")
    skipped = [n for n, key, cmd in (("Redis", "redis", a.redis_restart or a.own_redis),
                                     ("PostgreSQL", "postgres", a.postgres_restart)) if key in wanted and not cmd]
    if skipped:
        lines += ["", f"Not run here: the {' and '.join(skipped)} restart round(s) (they restart shared servers; pass "
                  "`--own-redis` or `--redis-restart CMD` / `--postgres-restart CMD` on a machine of your own)."]
    errors = sorted({e for r in results for e in r["errors"]})
    if errors:
        lines += ["", "Reasons of the failed jobs:", *[f"- {e}" for e in errors]]
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
