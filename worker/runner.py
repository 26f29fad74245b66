"""One job, start to finish. Safe to run twice for the same job id (redelivery, reaper re-queue):
only the attempt holding the registry lease works, and a job registers at most one checkpoint."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import traceback
from pathlib import Path

from fine.spec import JobSpec
from learngene_store import jobs as job_states
from learngene_store.blobs import make_blob_store
from learngene_store.db import session_factory
from learngene_store.models import Job
from worker.curves import LossLog
from worker.inputs import dataset_name, learngene_file
from worker.lease import Lease
from worker.outputs import export_diffusers_zip, store_files
from worker.pretrain_job import execute_pretrain, pretrain_dir
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def worker_id(settings: WorkerSettings) -> str:
    return settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run_job(settings: WorkerSettings, job_id: str) -> str:
    """Returns what happened (for logs and tests)."""
    me = worker_id(settings)
    Session = session_factory(settings)
    with Session() as session:
        claim = job_states.claim(session, job_id, me)
    if claim.lease is None:
        log.info("job %s skipped: %s", job_id, claim.reason)
        return f"skipped: {claim.reason}"
    assert claim.job is not None
    job: Job = claim.job
    pretraining = job.kind == "pretrain"
    work = pretrain_dir(settings, job_id) if pretraining else settings.work_dir / f"{job_id}-{claim.lease[:8]}"
    store = make_blob_store(settings)
    lease = Lease(settings, job_id, claim.lease)
    outcome = "abandoned: crashed"
    try:
        with lease:
            outcome = _guarded(settings, job, lease, execute_pretrain if pretraining else _execute_init, work, store)
    finally:
        if not (pretraining and outcome.startswith(("abandoned", "released"))):  # a pre-training run may resume here
            shutil.rmtree(work, ignore_errors=True)
    return outcome


def _guarded(settings: WorkerSettings, job: Job, lease: Lease, run, work: Path, store) -> str:  # type: ignore[no-untyped-def]
    """Run a job body; turn cancel and errors into registry states (unless the lease was lost)."""
    import torch

    from fine.training import JobCanceled  # torch is imported here, in the worker only

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    Session = session_factory(settings)
    try:
        return run(settings, job, work, store, lease)
    except JobCanceled:
        lease.stop()
        if lease.lost:
            return "abandoned: lease lost"
        with Session() as session:
            if lease.cancel_requested:
                job_states.mark_canceled(session, job.id, lease.lease)
                return "canceled"
            if lease.timed_out:
                limit = settings.max_job_seconds
                job_states.fail(session, job.id, lease.lease, f"ran past the wall-clock limit of {limit:g} s per "
                                "attempt (FINE_MAX_JOB_SECONDS); ask for fewer steps")
                return "failed: wall-clock limit"
            job_states.release(session, job.id, lease.lease, f"worker {worker_id(settings)} shut down (SIGTERM)")
        _redispatch(settings, job.id)
        return "released: worker shutting down"
    except Exception as e:
        log.error("job %s failed:\n%s", job.id, traceback.format_exc())
        lease.stop()
        if lease.lost:
            return "abandoned: lease lost"
        with Session() as session:
            job_states.fail(session, job.id, lease.lease, _one_line(e))
        return f"failed: {_one_line(e)}"


def _redispatch(settings: WorkerSettings, job_id: str) -> None:
    """Send a released job to the broker now (else the reaper does, after FINE_DISPATCH_GRACE)."""
    from dispatch.broker import enqueue_job, make_celery

    try:
        enqueue_job(make_celery(settings), settings, job_id)
        with session_factory(settings)() as session:
            job_states.mark_dispatched(session, job_id)
    except Exception as e:
        log.warning("released job %s not re-sent (%s); the reaper will", job_id, e)


def _execute_init(settings: WorkerSettings, job: Job, work: Path, store, lease: Lease) -> str:  # type: ignore[no-untyped-def]
    from fine.pipeline import JobCanceled, init_descendant

    Session = session_factory(settings)
    lease.set_phase("loading")
    with Session() as session:
        assert job.learngene_id is not None
        lg_path = learngene_file(session, store, job.learngene_id, work)
        dataset = dataset_name(session, store, job.dataset, work)
    # The stored spec is the validated one (learngene and num_heads resolved, warnings beside it);
    # the dataset loads from here.
    stored = {k: v for k, v in job.spec.items() if k in JobSpec.model_fields}
    spec = JobSpec.model_validate({**stored, "dataset": dataset})
    losses = LossLog()
    result = init_descendant(spec, lg_path, out_dir=work / "out", progress=losses.wrap(lease.progress),
                             should_stop=lease.should_stop)
    if lease.should_stop():
        raise JobCanceled("canceled after training")
    lease.set_phase("saving")
    files = {**result.files, **losses.write(work / "out")}
    zipped = export_diffusers_zip(Path(files["dense"]).parent)
    if zipped is not None:
        files["diffusers"] = zipped
    rows = store_files(store, files)
    lease.stop()
    checkpoint = {"learngene_id": job.learngene_id, "method": spec.method, "dataset": job.dataset,
                  "depth": spec.depth, "hidden_size": spec.hidden_size, "config": result.config,
                  "metrics": result.metrics, "owner": job.owner}
    with Session() as session:
        ckpt_id = job_states.succeed(session, job.id, lease.lease, checkpoint, rows)
    if ckpt_id is None:
        return "abandoned: lease lost before registration"
    return f"succeeded: {ckpt_id}"
