"""Checkpoint first, evaluation after (issue 17), in-process against a real SQLite registry and local
blob store: the checkpoint is registered before the evaluation starts, the evaluation fills in its
metrics under a lease of its own, and a failed, canceled or lost evaluation never loses the checkpoint."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from fine_zoo.settings import Settings
from learngene_store import evaluations
from learngene_store.blobs import make_blob_store
from learngene_store.catalog import ensure_builtin_datasets, register_default_learngene
from learngene_store.db import migrate, session_factory
from learngene_store.models import Checkpoint, Job, JobEvent, utcnow
from worker.evaluation import evaluate_checkpoint
from worker.runner import run_job

SPEC = {"depth": 2, "hidden_size": 32, "method": "fine", "sigma_steps": 2, "subset_size": 32, "finetune_steps": 0,
        "seed": 0, "train_bias": True, "batch_size": 8, "eval_images": 16, "sample_steps": 2}


@pytest.fixture()
def registry(tmp_path: Path, toy_learngene_dir: Path):  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path, heartbeat_interval=0.2, torch_threads=1)
    migrate(settings)
    with session_factory(settings)() as s:
        ensure_builtin_datasets(s)
        lg = register_default_learngene(s, make_blob_store(settings), toy_learngene_dir / "learngene.safetensors")
        assert lg is not None
        lg_id = lg.id

    def submit(**spec: object) -> str:
        with session_factory(settings)() as s:
            job = Job(request_hash="h", spec={**SPEC, **spec}, learngene_id=lg_id, dataset="digits:0-3", method="fine")
            s.add(job)
            s.commit()
            return job.id

    return settings, submit


def checkpoint_of(settings: Settings, job_id: str) -> Checkpoint:
    with session_factory(settings)() as s:
        return s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalar_one()


def events_of(settings: Settings, job_id: str) -> list[tuple[str, dict]]:
    with session_factory(settings)() as s:
        rows = s.execute(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)).scalars()
        return [(r.kind, r.data) for r in rows]


def test_the_checkpoint_is_downloadable_before_the_evaluation_starts(registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fine.pipeline

    settings, submit = registry
    job_id = submit()
    seen: dict = {}
    real = fine.pipeline.evaluate_and_save

    def evaluate_and_save(*args, **kw):  # type: ignore[no-untyped-def]
        with session_factory(settings)() as s:  # what a client sees while the evaluation runs
            job = s.get(Job, job_id)
            ckpt = job.checkpoint
            seen.update(status=job.status, metrics_status=ckpt.metrics_status, formats={f.format for f in ckpt.files},
                        dense=make_blob_store(settings).local_path(ckpt.file("dense").sha256).stat().st_size)
        return real(*args, **kw)

    monkeypatch.setattr(fine.pipeline, "evaluate_and_save", evaluate_and_save)
    outcome = run_job(settings, job_id)
    assert outcome.startswith("succeeded: ckpt_") and outcome.endswith("evaluation ready"), outcome
    assert seen["status"] == "succeeded" and seen["metrics_status"] == "running" and seen["dense"] > 0
    assert {"dense", "factored", "config", "curve"} <= seen["formats"] and "samples" not in seen["formats"]
    ckpt = checkpoint_of(settings, job_id)
    assert ckpt.metrics_status == "ready" and ckpt.metrics_error is None and ckpt.metrics_at is not None
    assert "heldout_loss" in ckpt.metrics and ckpt.config["metrics"] == ckpt.metrics
    assert {f.format for f in ckpt.files} >= {"dense", "factored", "config", "samples", "metrics"}
    with session_factory(settings)() as s:
        timings = s.get(Job, job_id).timings
    assert {"load_s", "assemble_s", "sigma_s", "save_s", "evaluate_s"} <= set(timings)
    log = [(kind, d.get("status") or d.get("metrics_status")) for kind, d in events_of(settings, job_id)
           if kind in ("status", "evaluation")]
    assert log == [("status", "running"), ("status", "succeeded"), ("evaluation", "running"), ("evaluation", "ready")]


def test_a_failed_evaluation_keeps_the_checkpoint(registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fine.pipeline

    settings, submit = registry
    job_id = submit()

    def broken(*args, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("the evaluation broke\nsecond line")

    monkeypatch.setattr(fine.pipeline, "evaluate_and_save", broken)
    assert run_job(settings, job_id).endswith("evaluation failed: RuntimeError: the evaluation broke")
    ckpt = checkpoint_of(settings, job_id)
    assert ckpt.metrics_status == "failed" and ckpt.metrics_error == "RuntimeError: the evaluation broke"
    assert ckpt.eval_lease is None and ckpt.metrics == {}
    with session_factory(settings)() as s:
        assert s.get(Job, job_id).status == "succeeded"
    assert make_blob_store(settings).local_path(ckpt.file("dense").sha256).stat().st_size == ckpt.file("dense").bytes


def test_a_lost_evaluator_is_reaped_and_the_checkpoint_re_evaluated(registry) -> None:  # type: ignore[no-untyped-def]
    settings, submit = registry
    job_id = submit()
    assert run_job(settings, job_id).endswith("evaluation ready")
    ckpt = checkpoint_of(settings, job_id)
    first = dict(ckpt.metrics)
    with session_factory(settings)() as s:  # as a worker that died during its evaluation leaves it
        s.execute(update(Checkpoint).where(Checkpoint.id == ckpt.id).values(
            metrics_status="running", eval_lease="dead", eval_worker_id="gone:1", metrics={},
            eval_heartbeat_at=utcnow() - timedelta(seconds=60)))
        s.commit()
        report = evaluations.reap(s, heartbeat_timeout=30, max_attempts=2, dispatch_grace=5)
    assert report.requeued == [ckpt.id] and report.dispatch == [ckpt.id]
    assert checkpoint_of(settings, job_id).metrics_status == "pending"
    assert evaluate_checkpoint(settings, ckpt.id) == "ready"
    assert evaluate_checkpoint(settings, ckpt.id) == "skipped: metrics are ready"  # a redelivered message
    again = checkpoint_of(settings, job_id)
    assert again.metrics_status == "ready" and again.eval_attempts == 2
    assert again.metrics["heldout_loss"] == pytest.approx(first["heldout_loss"], rel=1e-5)  # same dense weights
    tail = [d["metrics_status"] for kind, d in events_of(settings, job_id) if kind == "evaluation"]
    assert tail == ["running", "ready", "pending", "running", "ready"]
    # at the attempt limit it fails with the reason, and the checkpoint stays
    with session_factory(settings)() as s:
        s.execute(update(Checkpoint).where(Checkpoint.id == ckpt.id).values(
            metrics_status="running", eval_lease="dead", eval_heartbeat_at=utcnow() - timedelta(seconds=60)))
        s.commit()
        assert evaluations.reap(s, heartbeat_timeout=30, max_attempts=2, dispatch_grace=5).failed == [ckpt.id]
    lost = checkpoint_of(settings, job_id)
    assert lost.metrics_status == "failed" and "gave up after 2 attempts" in lost.metrics_error
    assert lost.file("dense") is not None


def test_cancel_stops_the_evaluation_not_the_checkpoint(registry) -> None:  # type: ignore[no-untyped-def]
    settings, submit = registry
    job_id = submit()
    assert run_job(settings, job_id).endswith("evaluation ready")
    ckpt_id = checkpoint_of(settings, job_id).id
    with session_factory(settings)() as s:
        assert not evaluations.request_cancel(s, job_id)  # nothing left to cancel
        s.execute(update(Checkpoint).where(Checkpoint.id == ckpt_id).values(metrics_status="pending"))
        s.commit()
        assert evaluations.claim(s, ckpt_id, "w").lease is not None  # running on w
        assert evaluations.request_cancel(s, job_id)
        assert s.get(Checkpoint, ckpt_id, populate_existing=True).eval_cancel_requested
        s.execute(update(Checkpoint).where(Checkpoint.id == ckpt_id).values(metrics_status="pending",
                                                                            eval_cancel_requested=False))
        s.commit()
    # a running evaluation sees the cancel at its next beat and stops: metrics canceled, checkpoint kept
    from worker import evaluation

    real = evaluation._stored_inputs

    def cancel_then_load(*args):  # type: ignore[no-untyped-def]
        with session_factory(settings)() as s:
            evaluations.request_cancel(s, job_id)
        import time

        time.sleep(0.5)  # a beat or two
        return real(*args)

    evaluation._stored_inputs = cancel_then_load
    try:
        assert evaluate_checkpoint(settings, ckpt_id) == "canceled"
    finally:
        evaluation._stored_inputs = real
    ckpt = checkpoint_of(settings, job_id)
    assert ckpt.metrics_status == "canceled" and ckpt.file("dense") is not None
    with session_factory(settings)() as s:
        assert s.get(Job, job_id).status == "succeeded"


def test_inputs_are_loaded_once_per_worker_process(registry) -> None:  # type: ignore[no-untyped-def]
    from fine.data import CACHE_STATS
    from worker import inputs

    settings, submit = registry
    inputs._learngenes.clear()
    first = submit()
    assert run_job(settings, first).startswith("succeeded")
    misses, hits = CACHE_STATS["misses"], CACHE_STATS["hits"]
    cached = sorted((settings.resolved_cache_dir / "datasets").glob("digits-*.images.npy"))
    assert len(cached) == 1 and len(inputs._learngenes) == 1
    stamp = cached[0].stat().st_mtime_ns
    loaded = next(iter(inputs._learngenes.values()))
    second = submit(seed=1)
    assert run_job(settings, second).startswith("succeeded")
    assert CACHE_STATS["misses"] == misses and CACHE_STATS["hits"] >= hits + 2  # train and test, no decoding
    assert cached[0].stat().st_mtime_ns == stamp
    assert list(inputs._learngenes.values()) == [loaded]  # the same object: not loaded again


def test_worker_refuses_an_unknown_sample_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from worker.settings import WorkerSettings

    monkeypatch.setenv("FINE_SAMPLE_PRECISION", "fp16")
    with pytest.raises(ValidationError, match="FINE_SAMPLE_PRECISION must be one of fp32, bf16, auto"):
        WorkerSettings()
    monkeypatch.setenv("FINE_SAMPLE_PRECISION", "auto")
    assert WorkerSettings().sample_precision == "auto"
