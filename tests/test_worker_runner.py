"""The worker's job runner in-process against a real SQLite registry and local blob store."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from fine_zoo.settings import Settings
from learngene_store import jobs as job_states
from learngene_store.blobs import make_blob_store
from learngene_store.catalog import ensure_builtin_datasets, register_default_learngene
from learngene_store.db import migrate, session_factory
from learngene_store.models import Checkpoint, Job, Learngene
from worker.runner import run_job

SPEC = {"depth": 2, "hidden_size": 32, "method": "fine", "sigma_steps": 2, "subset_size": 32, "finetune_steps": 0,
        "seed": 0, "train_bias": True, "batch_size": 8, "eval_images": 0, "sample_steps": 2}


def test_run_job_once_and_only_once(tmp_path: Path, toy_learngene_dir: Path) -> None:
    settings = Settings(home=tmp_path, heartbeat_interval=0.2, torch_threads=1)
    migrate(settings)
    store = make_blob_store(settings)
    with session_factory(settings)() as s:
        ensure_builtin_datasets(s)
        lg = register_default_learngene(s, store, toy_learngene_dir / "learngene.safetensors")
        assert lg is not None
        spec = SPEC
        job = Job(request_hash="h", spec=spec, learngene_id=lg.id, dataset="digits:0-3", method="fine")
        s.add(job)
        s.commit()
        job_id = job.id
    assert run_job(settings, job_id).startswith("succeeded: ckpt_")
    assert run_job(settings, job_id) == "skipped: job is succeeded"
    with session_factory(settings)() as s:
        done = s.get(Job, job_id)
        assert done.status == "succeeded" and done.phase == "done" and done.step == 2
        ckpt = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalar_one()
        assert {f.format for f in ckpt.files} >= {"dense", "factored", "config", "samples", "metrics"}
        for f in ckpt.files:
            assert store.local_path(f.sha256).stat().st_size == f.bytes
        assert s.execute(select(func.count()).select_from(Checkpoint)).scalar() == 1
        # a job whose input is broken fails with a one-line reason, not a crash
        bad = Job(request_hash="h2", spec={**spec, "hidden_size": 96}, learngene_id=lg.id, dataset="digits",
                  method="fine")
        s.add(bad)
        s.commit()
        bad_id = bad.id
    outcome = run_job(settings, bad_id)
    assert outcome.startswith("failed: ")
    with session_factory(settings)() as s:
        failed = s.get(Job, bad_id)
        assert failed.status == "failed" and failed.error and "\n" not in failed.error
        assert job_states.is_final(failed.status)


def test_pretrain_job_registers_a_learngene(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, heartbeat_interval=0.2, torch_threads=1)
    migrate(settings)
    with session_factory(settings)() as s:
        ensure_builtin_datasets(s)
        spec = {"dataset": "digits", "depth": 2, "hidden_size": 64, "head_dim": 32, "rank": 4, "patch_size": 4,
                "steps": 3, "widths": [32], "batch_size": 16, "lr": 1e-3, "warmup": 1, "ema_decay": 0.9, "seed": 0,
                "eval_images": 16, "name": "unit", "image_size": 8, "in_channels": 1, "num_classes": 10}
        job = Job(request_hash="p", spec=spec, kind="pretrain", learngene_id=None, dataset="digits",
                  method="pretrain", total=3)
        s.add(job)
        s.commit()
        job_id = job.id
    outcome = run_job(settings, job_id)
    assert outcome.startswith("succeeded: unit-"), outcome
    with session_factory(settings)() as s:
        done = s.get(Job, job_id)
        lg = s.get(Learngene, done.result_learngene_id)
        assert lg is not None and lg.rank == 4 and lg.widths == [32, 64] and lg.steps == 3
        assert make_blob_store(settings).local_path(lg.sha256).stat().st_size == lg.bytes
    assert not (tmp_path / "work" / f"pretrain-{job_id}").exists()



def test_wall_clock_limit_fails_the_job(tmp_path: Path, toy_learngene_dir: Path) -> None:
    settings = Settings(home=tmp_path, heartbeat_interval=0.2, torch_threads=1, max_job_seconds=2)
    migrate(settings)
    with session_factory(settings)() as s:
        ensure_builtin_datasets(s)
        lg = register_default_learngene(s, make_blob_store(settings), toy_learngene_dir / "learngene.safetensors")
        job = Job(request_hash="h", spec={**SPEC, "sigma_steps": 20000}, learngene_id=lg.id, dataset="digits",
                  method="fine")
        s.add(job)
        s.commit()
        job_id = job.id
    assert run_job(settings, job_id) == "failed: wall-clock limit"
    with session_factory(settings)() as s:
        failed = s.get(Job, job_id)
        assert failed.status == "failed" and "wall-clock limit of 2 s" in failed.error and failed.step < 20000


def test_pretrain_resumes_from_the_blob_store_on_another_host(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from worker.lease import Lease

    shared = {"database_url": f"sqlite:///{tmp_path / 'registry.db'}", "blob_dir": tmp_path / "blobs",
              "heartbeat_interval": 0.2, "torch_threads": 1}
    host_a, host_b = Settings(home=tmp_path / "a", **shared), Settings(home=tmp_path / "b", **shared)
    migrate(host_a)
    with session_factory(host_a)() as s:
        ensure_builtin_datasets(s)
        spec = {"dataset": "digits", "depth": 1, "hidden_size": 32, "head_dim": 32, "rank": 2, "patch_size": 4,
                "steps": 254, "widths": [], "depths": [], "batch_size": 4, "lr": 1e-3, "warmup": 1, "ema_decay": 0.9,
                "seed": 0, "eval_images": 8, "name": "resume", "image_size": 8, "in_channels": 1, "num_classes": 10}
        job = Job(request_hash="r", spec=spec, kind="pretrain", dataset="digits", method="pretrain", total=254)
        s.add(job)
        s.commit()
        job_id = job.id
    original = Lease.progress
    steps: list[int] = []

    def stop_after_checkpoint(self, phase, step, total, loss):  # type: ignore[no-untyped-def]
        original(self, phase, step, total, loss)
        steps.append(step)
        self.cancel_requested = self.cancel_requested or step >= 252  # host A goes away after step 250's state

    monkeypatch.setattr(Lease, "progress", stop_after_checkpoint)
    assert run_job(host_a, job_id) == "canceled"
    with session_factory(host_a)() as s:
        interrupted = s.get(Job, job_id)
        assert interrupted.resume_sha is not None
        interrupted.status, interrupted.cancel_requested, interrupted.finished_at = "queued", False, None
        s.commit()
    steps.clear()

    def record(self, phase, step, total, loss):  # type: ignore[no-untyped-def]
        steps.append(step)
        original(self, phase, step, total, loss)

    monkeypatch.setattr(Lease, "progress", record)
    assert run_job(host_b, job_id).startswith("succeeded: resume-")
    assert steps[0] == 251, steps[:3]  # host B had no local state: it resumed from the blob store
    with session_factory(host_b)() as s:
        assert s.get(Job, job_id).resume_sha is None
