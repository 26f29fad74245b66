"""Toy-sized smoke tests of the issue-4 benchmark scripts: size table (report, CSV, PNGs) and savings."""

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from descendants import EvalConfig, Run, train_run  # noqa: E402
from size_table import Profile, planned_runs, report, run_profile  # noqa: E402

from fine.data import load  # noqa: E402


def toy_profile(out: Path, learngene: Path) -> Profile:
    return Profile(str(out), ((1, 32), (2, 64)), (0, 1, 2), 2, scratch_factor=2, dataset="digits", learngene=str(learngene),
                   eval=EvalConfig(subset=128, heldout_n=32, curve_every=1, fd_n=32, fd_steps=2, batch_size=16))


def test_planned_runs_give_scratch_ten_k_and_fine_its_sigma_stage() -> None:
    prof = Profile("x", ((2, 128),), (0, 500, 2000), 300, seeds=(0, 1), headline=((2, 128),))
    runs = planned_runs(prof, "lg")
    assert len(runs) == 10  # (3 methods + 2 scratch budgets) x 2 seeds
    scratch = [r for r in runs if r.method == "scratch" and r.seed == 0]
    # 10 K for K = 500 and 2000: the 5,000-step run measures every point up to it, the 20,000-step run the rest.
    assert [(r.full_steps, r.fd_at) for r in scratch] == [(5000, (500, 2000, 5000)), (20000, (20000,))]
    fine = [r for r in runs if r.method == "fine"]
    assert all(r.sigma_steps == 300 and r.full_steps == 2000 and r.fd_at == (0, 500, 2000) for r in fine)
    assert all(r.sigma_steps == 0 for r in runs if r.method in ("linear-fit", "weight-selection"))


def test_the_paper_protocol_under_the_service_rule_trains_both_methods_by_it() -> None:
    """`--rule ema`: FINE and scratch both keep the service's EMA; scratch is one 20,000-step run per size and seed
    that also measures the 5,000-step product point; `--rule raw` keeps the committed raw FINE runs."""
    from paper_protocol import ANCESTRY_STEPS, FULL_STEPS, PROFILES_BY_RULE, SCRATCH_PRODUCT

    from fine.spec import FINETUNE_OPTIM

    ema = planned_runs(PROFILES_BY_RULE["ema"], "lg")
    assert {r.ema for r in ema} == {FINETUNE_OPTIM.ema} and {r.method for r in ema} == {"fine", "scratch"}
    scratch = [r for r in ema if r.method == "scratch" and (r.depth, r.width, r.seed) == (6, 64, 1)]
    assert [(r.full_steps, r.fd_at) for r in scratch] == [
        (ANCESTRY_STEPS, tuple(sorted((2000, SCRATCH_PRODUCT, FULL_STEPS, ANCESTRY_STEPS))))]
    raw = planned_runs(PROFILES_BY_RULE["raw"], "lg")
    assert {r.ema for r in raw} == {0.0} and {r.method for r in raw} == {"fine"}
    assert {(r.depth, r.width, r.seed) for r in raw} == {(r.depth, r.width, r.seed) for r in ema}


def test_new_domain_profiles_give_scratch_the_jobs_steps_and_ten_times_them() -> None:
    from size_table import JOB_SIGMA_STEPS, PROFILES

    prof = PROFILES["new-domain-cmnist5k"]
    assert prof.dataset == "colour-mnist-5k" and prof.sigma_steps == JOB_SIGMA_STEPS
    runs = [r for r in planned_runs(prof, "lg") if (r.depth, r.width) == (6, 96)]
    assert [(r.method, r.sigma_steps, r.full_steps, r.fd_at) for r in runs] == [
        ("fine", JOB_SIGMA_STEPS, 0, (0,)), ("scratch", 0, JOB_SIGMA_STEPS, (JOB_SIGMA_STEPS,)),
        ("scratch", 0, 10 * JOB_SIGMA_STEPS, (10 * JOB_SIGMA_STEPS,))]
    assert {(r.depth, r.width) for r in planned_runs(prof, "lg")} == {(d, w) for d in (2, 6) for w in (64, 96, 128)}


def test_size_table_runs_resumes_and_reports(tmp_path, toy_learngene_dir) -> None:
    prof = toy_profile(tmp_path / "table", toy_learngene_dir / "learngene.safetensors")
    run_profile(prof, max_runs=5)
    run_profile(prof)  # resumes: only the remaining runs
    lines = (tmp_path / "table" / "runs.jsonl").read_text().splitlines()
    assert len(lines) == len(planned_runs(prof, "")) == 10
    report(prof)
    rows = list(csv.DictReader(open(tmp_path / "table" / "table.csv")))
    got = {(r["depth"], r["method"], r["k"]) for r in rows}
    for depth in ("1", "2"):
        for method in ("fine", "linear-fit", "weight-selection"):
            assert {(depth, method, "0"), (depth, method, "1"), (depth, method, "2")} <= got
        assert {(depth, "scratch", "1"), (depth, "scratch", "2"), (depth, "scratch", "4")} <= got
    table = (tmp_path / "table" / "table.md").read_text()
    assert "Runs finished: 10 of 10" in table and "| 2 | 64 | fine | σ2 + 2 |" in table
    for name in ("curves_d1_w32.png", "curves_d2_w64.png", "samples_d1_w32.png", "samples_d2_w64.png"):
        assert (tmp_path / "table" / name).stat().st_size > 1000
    # Every run's final grid, plus scratch at its shorter budgets (equal steps with the inits): none overwritten.
    grids = {p.name for p in (tmp_path / "table" / "samples").iterdir()}
    assert {"fine_d1_w32_s0_n2.png", "scratch_d1_w32_s0_n1.png", "scratch_d1_w32_s0_n2.png",
            "scratch_d1_w32_s0_n4.png"} <= grids


def test_ablation_variants_change_the_start(toy_learngene) -> None:
    train, test = load("digits", "train"), load("digits", "test")
    ecfg = EvalConfig(subset=64, heldout_n=32, curve_every=1, fd_n=16, fd_steps=2, batch_size=16)
    start = {}
    for kw in ({}, {"sigma_init": "linear"}, {"sigma_init": "constant"}, {"rank": 16}, {"train_bias": False}):
        run = Run("fine", 2, 64, dataset="digits", sigma_steps=1, full_steps=0, fd_at=(0,), **kw)
        start[str(kw)] = train_run(run, toy_learngene, train, test, ecfg)["curve"][0]["heldout"]
    base = start["{}"]
    assert start["{'train_bias': False}"] == base  # same init, differs only in what trains
    for k in ("{'sigma_init': 'linear'}", "{'sigma_init': 'constant'}", "{'rank': 16}"):
        assert start[k] != base, k


def test_savings_target_is_fines_curve_at_budget_k() -> None:
    from savings import fine_target, scratch_steps

    fine = {"depth": 2, "width": 64, "full_steps": 4, "heldout": 0.05,
            "curve": [{"phase": "init", "step": 0, "heldout": 0.9}, {"phase": "sigma", "step": 3, "heldout": 0.3},
                      {"phase": "full", "step": 2, "heldout": 0.1}, {"phase": "full", "step": 4, "heldout": 0.05}]}
    assert fine_target(fine, None) == (4, 0.05)
    assert fine_target(fine, 0) == (0, 0.3)  # K = 0: right after the sigma stage
    assert fine_target(fine, 2) == (2, 0.1)
    scratch = {"curve": [{"phase": "init", "step": 0, "heldout": 1.0}] +
               [{"phase": "full", "step": s, "heldout": 0.5 / s} for s in (1, 2, 4, 8)]}
    assert scratch_steps(scratch, 0.1) == 8 and scratch_steps(scratch, 0.01) is None


def test_claims_count_the_winner_of_each_comparison_from_seed_means(tmp_path) -> None:
    from claims import claims, load_means

    rows = [  # depth 2: fine wins K=500 only on the mean of its two seeds; scratch@5000 beats every init
        (2, "fine", 500, 0, 0.060), (2, "fine", 500, 1, 0.070), (2, "linear-fit", 500, 0, 0.066),
        (2, "weight-selection", 500, 0, 0.067), (2, "scratch", 500, 0, 0.080), (2, "scratch", 5000, 0, 0.050),
        (4, "fine", 500, 0, 0.070), (4, "linear-fit", 500, 0, 0.060), (4, "weight-selection", 500, 0, 0.065),
        (4, "scratch", 500, 0, 0.065),
    ]
    with (tmp_path / "table.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["depth", "width", "method", "sigma_steps", "k", "seed", "heldout", "fd", "kid"])
        for d, m, k, s, h in rows:
            w.writerow([d, 128, m, 300 if m == "fine" else 0, k, s, h, "", ""])
    means = load_means(tmp_path / "table.csv")
    assert means[(2, 128, "fine", 500)] == {"heldout": 0.065, "fd": None, "seeds": 2}
    text = claims(means)
    assert "| K=500 lowest MSE | fine 1, linear-fit 1 |" in text
    assert "| K=500 fine vs scratch@K | fine 1, scratch 1 |" in text
    assert "| K=500 best init vs scratch@10K | scratch 1 |" in text


def test_adapt_parts_marks_the_service_rule_and_counts_what_trains(tmp_path, toy_learngene_dir) -> None:
    from adapt_parts import main

    lg = toy_learngene_dir / "learngene.safetensors"
    main(["--targets", f"colour-digits={lg}", "digits=" + str(lg), "--steps", "2", "--test", "8", "--subset", "32",
          "--batch-size", "8", "--out", str(tmp_path)])
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    colour = {tuple(r["parts"]) if r["parts"] is not None else None: r for r in rows if r["dataset"] == "colour-digits"}
    assert [k for k, r in colour.items() if r["service_rule"]] == [("x_embedder", "final_layer")]
    grey = [r for r in rows if r["dataset"] == "digits" and r["service_rule"]]
    assert [r["parts"] for r in grey] == [[]]  # the learngene's own pixels: nothing extra trains
    sizes = [colour[k]["trainable_params"] for k in ((), ("x_embedder",), ("x_embedder", "final_layer"), None)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4  # each part adds parameters; scratch trains them all
    assert "◀" in (tmp_path / "table.md").read_text()


def test_sigma_tune_picks_the_fewest_steps_that_hold_quality_at_every_size() -> None:
    from sigma_tune import choice_lines, fewest_steps

    def rec(depth: int, curve: list[float], lr: float = 1e-3) -> dict:
        return {"tag": "t", "lr": lr, "schedule": "constant", "subset": 5000, "depth": depth, "width": 128,
                "curve": [{"step": 50 * i, "heldout": v} for i, v in enumerate(curve)]}

    fast, slow = rec(2, [0.060, 0.0503, 0.0501, 0.0500]), rec(6, [0.050, 0.047, 0.0452, 0.0450])
    assert fewest_steps([fast], 0.01) == (50, 150)
    assert fewest_steps([fast, slow], 0.01) == (100, 150)  # the slower size decides
    assert fewest_steps([fast, slow], 0.0) == (150, 150)
    lines = choice_lines([fast, slow, rec(2, [0.07, 0.06, 0.05, 0.05], lr=3e-3)], 0.01)
    assert any("| t | 0.001 |" in line and "| 100 | 150 |" in line for line in lines)
    assert not any("| t | 0.003 |" in line for line in lines)  # measured at one size only: no claim


def test_new_domain_verdict_compares_seed_means_and_lower_wins() -> None:
    from new_domain import _cmp, _row

    fine, scratch = {"heldout": [0.04, 0.06], "fd": []}, {"heldout": [0.06], "fd": [30.0]}
    assert _cmp(fine, scratch, "heldout") == "**yes** (-17 %)"  # mean 0.05 against 0.06
    assert _cmp(scratch, fine, "heldout") == "no (+20 %)"
    assert _cmp(fine, scratch, "fd") == "–" and _cmp(None, scratch, "heldout") == "–"  # nothing measured: no claim
    rows = [{"depth": 2, "width": 64, "method": "scratch", "k": k} for k in (125, 1250)]
    assert _row(rows, (2, 64), "scratch", 1250) is rows[1] and _row(rows, (6, 64), "scratch", 125) is None
