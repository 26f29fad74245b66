"""A pre-training job: train an ancestry with `fine.pretrain`, then register its learngene set.

The work directory is stable per job (not per attempt): `fine.pretrain` checkpoints into it, and
each checkpoint also goes to the blob store (`jobs.resume_sha`), so an attempt re-queued after a
worker died resumes instead of starting over, on this host or any other.
"""

from __future__ import annotations

from pathlib import Path

from fine.spec import PretrainSpec
from learngene_store import jobs as job_states
from learngene_store.blobs import BlobStore, copy_out
from learngene_store.catalog import DuplicateLearngene, attach_files, register_learngene
from learngene_store.db import session_factory
from learngene_store.learngene_meta import normalize
from learngene_store.models import Job
from worker.curves import LossLog
from worker.inputs import dataset_name, load_splits
from worker.lease import Lease
from worker.settings import WorkerSettings


def pretrain_dir(settings: WorkerSettings, job_id: str) -> Path:
    return settings.work_dir / f"pretrain-{job_id}"


def execute_pretrain(settings: WorkerSettings, job: Job, work: Path, store: BlobStore, lease: Lease) -> str:
    """Returns 'succeeded: <learngene id>' or raises (JobCanceled, or the library's error)."""
    from fine.config import DiTConfig
    from fine.formats import read_learngene_metadata
    from fine.pretrain import PretrainConfig, pretrain
    from fine.training import JobCanceled, OptimConfig

    Session = session_factory(settings)
    spec = job.spec
    lease.set_phase("loading")
    with Session() as session:
        dataset = dataset_name(session, store, job.dataset, settings.resolved_cache_dir)
    cfg = DiTConfig(image_size=spec["image_size"], in_channels=spec["in_channels"], patch_size=spec["patch_size"],
                    depth=spec["depth"], hidden_size=spec["hidden_size"], head_dim=spec["head_dim"],
                    num_classes=spec["num_classes"], rank=spec["rank"])
    train, test = load_splits(dataset, settings.resolved_cache_dir)
    every = max(1, min(250, spec["steps"]))
    # Jobs queued before the recipe fields existed get the spec's defaults for them.
    known = {k: v for k, v in spec.items() if k in PretrainSpec.model_fields}
    recipe = PretrainSpec.model_validate({**known, "dataset": job.dataset}, strict=False)
    pcfg = PretrainConfig(steps=spec["steps"], widths=spec["widths"], ema_decay=spec["ema_decay"], seed=spec["seed"],
                          ckpt_every=every, eval_every=every, eval_images=spec["eval_images"], name=spec["name"],
                          sigma_init=recipe.sigma_init, sigma_lr_scale=recipe.sigma_lr_scale,
                          depths=recipe.subnet_depths, layer_form=recipe.layer_form)
    optim = OptimConfig(lr=spec["lr"], warmup=spec["warmup"], batch_size=spec["batch_size"], schedule=recipe.schedule)

    state = work / "run" / "train_state.pt"
    if not state.exists() and job.resume_sha:  # re-queued onto another host: resume from the blob store
        copy_out(store, job.resume_sha, state)
    saved = [state.stat().st_mtime if state.exists() else None]

    def progress(phase: str, step: int, total: int, loss: float | None) -> None:
        lease.progress(phase, step, total, loss)
        if state.exists() and state.stat().st_mtime != saved[0]:  # fine.pretrain just checkpointed
            saved[0] = state.stat().st_mtime
            sha, _ = store.put_file(state)
            with Session() as session:
                job_states.save_resume(session, job.id, lease.lease, sha)
        if lease.should_stop():
            raise JobCanceled(f"{phase} canceled at step {step}/{total}")

    pretrain(work / "run", cfg, train, test, pcfg, optim, progress=progress)
    if lease.should_stop():
        raise JobCanceled("canceled after training")
    lease.set_phase("registering")
    path = work / "run" / "learngene" / "learngene.safetensors"
    meta = normalize(read_learngene_metadata(path), path.name)
    with Session() as session:
        try:
            lg_id = register_learngene(session, store, path, meta, owner=job.owner,
                                       public=bool(spec.get("public", False))).id
        except DuplicateLearngene as e:
            lg_id = e.existing.id
        curve = LossLog.from_train_log(work / "run" / "train_log.jsonl").write(work / "pictures").get("curve")
        if curve is not None:
            attach_files(session, store, lg_id, {"curve.png": curve})
    lease.stop()
    with Session() as session:
        if not job_states.succeed_pretrain(session, job.id, lease.lease, lg_id):
            return "abandoned: lease lost before registration"
    return f"succeeded: {lg_id}"
