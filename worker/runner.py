"""One job, start to finish. Safe to run twice for the same job id (redelivery, reaper re-queue):
only the attempt holding the registry lease works, and a job registers at most one checkpoint.

An init job is two phases: load → assemble → sigma stage → save → **register** (the job is `succeeded`,
its checkpoint downloadable), then the evaluation (worker/evaluation.py) fills in the checkpoint's
metrics in the same process, from the model still in memory, under a lease of its own."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from learngene_store import evaluations
from learngene_store import jobs as job_states
from learngene_store.blobs import make_blob_store
from learngene_store.db import session_factory
from learngene_store.models import Job
from worker import inputs
from worker.curves import LossLog
from worker.evaluation import EvalInputs, evaluate_phase
from worker.learngene_choice import settle_learngene
from worker.lease import Ends, Lease, guarded, one_line, redispatch, worker_id
from worker.outputs import export_diffusers_zip, store_files
from worker.pretrain_job import execute_pretrain, pretrain_dir
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)
__all__ = ["one_line", "run_job", "worker_id"]


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
    """Run a job body; turn cancel and errors into the job's registry states (unless the lease was lost)."""
    Session = session_factory(settings)

    def write(change):  # type: ignore[no-untyped-def]
        with Session() as session:
            return change(session)

    ends = Ends(canceled=lambda: write(lambda s: job_states.mark_canceled(s, job.id, lease.lease)),
                failed=lambda why: write(lambda s: job_states.fail(s, job.id, lease.lease, why)),
                released=lambda why: write(lambda s: job_states.release(s, job.id, lease.lease, why)),
                redispatch=lambda: _redispatch(settings, job.id), limit_hint="ask for fewer steps")
    return guarded(settings, lease, lambda: run(settings, job, work, store, lease), ends, f"job {job.id}")


def _redispatch(settings: WorkerSettings, job_id: str) -> None:
    from dispatch.broker import enqueue_job

    redispatch(settings, f"job {job_id}", lambda celery: enqueue_job(celery, settings, job_id),
               lambda session: job_states.mark_dispatched(session, job_id))


def _execute_init(settings: WorkerSettings, job: Job, work: Path, store, lease: Lease) -> str:  # type: ignore[no-untyped-def]
    from fine.pipeline import JobCanceled, train_and_save

    Session = session_factory(settings)
    cache = settings.resolved_cache_dir
    timings: dict[str, float] = {}
    started = time.time()
    if settle_learngene(settings, job, store, lease):  # several learngenes fit equally: measure them first
        timings["choose_s"] = time.time() - started
        started = time.time()
    lease.set_phase("loading")
    with Session() as session:
        assert job.learngene_id is not None
        learngene = inputs.learngene(session, store, job.learngene_id, cache)
        source = inputs.dataset_name(session, store, job.dataset, cache)
    train, test = inputs.load_splits(source, cache)
    spec = inputs.job_spec(job)
    timings["load_s"] = time.time() - started
    losses = LossLog()
    trained = train_and_save(spec, learngene, train, out_dir=work / "out", progress=losses.wrap(lease.progress),
                             should_stop=lease.should_stop)
    for phase in ("assemble", "sigma", "finetune"):
        if phase in trained.timings:
            timings[f"{phase}_s"] = trained.timings[phase]
    if lease.should_stop():
        raise JobCanceled("canceled after training")
    lease.set_phase("saving")
    saving = time.time()
    files = {**trained.files, **losses.write(work / "out")}
    zipped = export_diffusers_zip(Path(files["dense"]).parent)
    if zipped is not None:
        files["diffusers"] = zipped
    rows = store_files(store, files)
    lease.stop()
    timings["save_s"] = trained.timings["save"] + time.time() - saving
    checkpoint = {"learngene_id": job.learngene_id, "method": spec.method, "dataset": job.dataset,
                  "depth": spec.depth, "hidden_size": spec.hidden_size, "config": trained.config,
                  "metrics": {}, "owner": job.owner}
    timings = {k: round(v, 3) for k, v in timings.items()}
    token = evaluations.new_lease()
    with Session() as session:
        ckpt_id = job_states.succeed(session, job.id, lease.lease, checkpoint, rows, timings=timings,
                                     evaluator=(token, worker_id(settings)))
    if ckpt_id is None:
        return "abandoned: lease lost before registration"
    log.info("job %s: checkpoint %s registered (downloadable); evaluating", job.id, ckpt_id)
    ready = EvalInputs(trained.model, spec, trained.config, train, test, trained.classes, timings)
    evaluated = evaluate_phase(settings, ckpt_id, job.id, token, store, work / "eval", lambda: ready)
    return f"succeeded: {ckpt_id}; evaluation {evaluated}"
