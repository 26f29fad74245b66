"""A short run of the fault benchmark (api_tests/bench_faults.py) on the suite's service: one SIGKILL
mid-job and concurrent idempotent submissions from two users; nothing lost, stuck or duplicated, and
only documented answers. (The restart rounds restart shared servers: only the benchmark runs them.)"""

from __future__ import annotations

import time

from api_tests.bench_faults import concurrent_round, kill_round, outcome
from api_tests.harness import Service


def test_short_fault_run(service: Service) -> None:
    rounds = [kill_round(service, 1), concurrent_round(service, 6, 2)]
    deadline = time.monotonic() + 240
    for r in (outcome(service, rnd, deadline) for rnd in rounds):
        assert r["submitted"] == r["succeeded"] > 0, r
        assert r["lost"] == r["stuck"] == r["duplicate checkpoints"] == r["undocumented answers"] == 0, r
    assert outcome(service, rounds[0], deadline)["re-run (attempts > 1)"] == 1
