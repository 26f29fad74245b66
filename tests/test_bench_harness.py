"""Toy-sized smoke test of the benchmark harness (bench/descendants.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from descendants import EvalConfig, Run, append, done_keys, train_run  # noqa: E402

from fine.data import load  # noqa: E402


def test_harness_runs_every_method_and_resumes(tmp_path, toy_learngene) -> None:
    train, test = load("digits", "train"), load("digits", "test")
    ecfg = EvalConfig(subset=128, heldout_n=64, curve_every=2, fd_n=32, fd_steps=2, batch_size=16)
    runs = [Run(m, 2, 32, dataset="digits", sigma_steps=3, full_steps=4, fd_at=(0, 4)) for m in
            ("fine", "tleg", "weight-selection", "scratch")]
    runs.append(Run("fine", 2, 32, dataset="digits", sigma_steps=3, full_steps=0, fd_at=(0,), sigma_init="random"))
    path = tmp_path / "runs.jsonl"
    for run in runs:
        rec = train_run(run, toy_learngene, train, test, ecfg)
        assert set(rec["points"]) == {str(s) for s in run.fd_at}
        assert all(p["heldout"] > 0 for p in rec["points"].values())
        phases = [c["phase"] for c in rec["curve"]]
        assert phases[0] == "init" and ("sigma" in phases) == (run.method == "fine")
        append(path, rec)
    assert done_keys(path) == {r.key() for r in runs}
