"""Toy-sized smoke test of the benchmark harness (bench/descendants.py)."""

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from descendants import (  # noqa: E402
    Checkpointing,
    EvalConfig,
    Run,
    RunPaused,
    append,
    done_keys,
    read_runs,
    train_run,
)

from fine.data import load  # noqa: E402


def test_harness_runs_every_method_and_resumes(tmp_path, toy_learngene) -> None:
    train, test = load("digits", "train"), load("digits", "test")
    ecfg = EvalConfig(subset=128, heldout_n=64, curve_every=2, fd_n=32, fd_steps=2, batch_size=16)
    runs = [Run(m, 2, 32, dataset="digits", sigma_steps=3, full_steps=4, fd_at=(0, 4)) for m in
            ("fine", "linear-fit", "weight-selection", "scratch")]
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


def test_records_read_back_in_order_across_files(tmp_path) -> None:
    first, second, missing = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "none.jsonl"
    runs = [Run("fine", 2, 32, fd_at=(0, 4)), Run("scratch", 4, 64, seed=1), Run("linear-fit", 1, 32)]
    append(first, {**runs[0].__dict__, "heldout": 0.1})
    append(second, {**runs[1].__dict__, "heldout": 0.2})
    append(second, {**runs[2].__dict__, "heldout": 0.3})
    with open(second, "a") as f:
        f.write("\n")  # a trailing blank line is not a record
    recs = read_runs(first, missing, second)
    assert [r["heldout"] for r in recs] == [0.1, 0.2, 0.3]
    assert [Run.from_record(r) for r in recs] == runs  # fd_at comes back a tuple, extra keys are ignored
    assert read_runs(missing) == [] and done_keys(missing) == set()


def test_batches_started_midway_match_the_uninterrupted_stream() -> None:
    from fine.data import batches

    data = load("digits", "train").subset(100, seed=0)  # 6 batches of 16 per epoch: skips cross epochs
    whole = batches(data, 16, seed=3)
    first = [next(whole) for _ in range(20)]
    later = batches(data, 16, seed=3, start=13)
    for x, y in first[13:]:
        x2, y2 = next(later)
        assert torch.equal(x, x2) and torch.equal(y, y2)


@pytest.mark.parametrize(("method", "ema"), [("fine", 0.0), ("scratch", 0.0), ("fine", 0.999), ("scratch", 0.9)])
def test_paused_run_continues_exactly_where_it_stopped(tmp_path, toy_learngene, method, ema) -> None:
    train, test = load("digits", "train"), load("digits", "test")
    ecfg = EvalConfig(subset=128, heldout_n=64, curve_every=2, fd_n=32, fd_steps=2, batch_size=16)
    run = Run(method, 2, 32, dataset="digits", sigma_steps=3, full_steps=7, fd_at=(0, 4, 7), ema=ema)
    whole = train_run(run, toy_learngene, train, test, ecfg)
    # A deadline already past pauses the run after every step: seven sessions of one step each.
    ckpt = Checkpointing(tmp_path / "partial" / "run.pt", every=100, deadline=time.time() - 1)
    pauses = 0
    while True:
        try:
            pieced = train_run(run, toy_learngene, train, test, ecfg, ckpt=ckpt)
            break
        except RunPaused:
            pauses += 1
            assert ckpt.path.exists()
    assert pauses == run.full_steps - 1
    assert not ckpt.path.exists()
    assert pieced["curve"] == whole["curve"]
    assert pieced["points"] == whole["points"]


def test_a_checkpoint_of_another_run_is_refused(tmp_path, toy_learngene) -> None:
    train, test = load("digits", "train"), load("digits", "test")
    ecfg = EvalConfig(subset=128, heldout_n=64, curve_every=2, fd_n=32, fd_steps=2, batch_size=16)
    ckpt = Checkpointing(tmp_path / "run.pt", every=100, deadline=time.time() - 1)
    with pytest.raises(RunPaused):
        train_run(Run("scratch", 2, 32, dataset="digits", full_steps=3), toy_learngene, train, test, ecfg, ckpt=ckpt)
    with pytest.raises(ValueError, match="another run"):
        train_run(Run("scratch", 2, 32, seed=1, dataset="digits", full_steps=3), toy_learngene, train, test, ecfg,
                  ckpt=ckpt)


def test_measuring_mid_run_leaves_the_training_randomness_alone() -> None:
    from descendants import measure

    from fine.config import DiTConfig
    from fine.model import DiT

    test = load("fashion-mnist", "test")  # a dataset with a committed classifier, whose construction draws
    model = DiT(DiTConfig(depth=1, hidden_size=32, rank=32))
    before = torch.get_rng_state()
    point = measure(model, test, "fashion-mnist", EvalConfig(heldout_n=8, fd_n=8, fd_steps=1), seed=0)
    assert point["fd_fmnist"] > 0
    assert torch.equal(torch.get_rng_state(), before)


def test_full_optim_sets_the_dense_phase_rate(toy_learngene) -> None:
    """At rate 0 the dense phase leaves the model as the sigma stage left it; at the default it does not."""
    from fine.training import OptimConfig

    train, test = load("digits", "train"), load("digits", "test")
    ecfg = EvalConfig(subset=128, heldout_n=64, curve_every=2, batch_size=16)
    run = Run("fine", 2, 32, dataset="digits", sigma_steps=3, full_steps=4)
    frozen = train_run(run, toy_learngene, train, test, ecfg, full_optim=OptimConfig(lr=0.0, batch_size=16))
    after_sigma = [c["heldout"] for c in frozen["curve"] if c["phase"] == "sigma"][-1]
    assert all(c["heldout"] == pytest.approx(after_sigma, abs=1e-6) for c in frozen["curve"] if c["phase"] == "full")
    moved = train_run(run, toy_learngene, train, test, ecfg)
    assert moved["heldout"] != pytest.approx(after_sigma, abs=1e-6)


def test_watch_sees_every_full_step_and_leaves_the_run_unchanged(toy_learngene) -> None:
    """`watch` is called after the sigma stage (step 0) and after every full step; watching changes no number."""
    train, test = load("digits", "train"), load("digits", "test")
    ecfg = EvalConfig(subset=128, heldout_n=64, curve_every=2, batch_size=16)
    run = Run("fine", 2, 32, dataset="digits", sigma_steps=3, full_steps=4)
    seen: list[int] = []
    watched = train_run(run, toy_learngene, train, test, ecfg, watch=lambda step, _m: seen.append(step))
    assert seen == [0, 1, 2, 3, 4]
    assert watched["curve"] == train_run(run, toy_learngene, train, test, ecfg)["curve"]
