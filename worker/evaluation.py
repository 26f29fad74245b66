"""A registered checkpoint's evaluation (held-out loss, FD, the sample grid): the phase after training.

Two ways in, one way through (`evaluate_phase`):
- right after registration, in the worker that trained the checkpoint, from the model still in memory
  (worker/runner.py: the checkpoint is registered with its evaluation already claimed);
- the `worker.evaluate` task (`evaluate_checkpoint`), for a checkpoint whose evaluation is `pending`
  again (its evaluator died or shut down: the reaper re-queues and re-sends it, like a job): any worker
  loads the dense file from the blob store and evaluates it.

The evaluation holds a lease of its own on the checkpoint row (learngene_store/evaluations.py): it beats,
reports progress (phase `eval`) to the job's event stream, stops on cancel, on the wall-clock limit and on
shutdown, and only the attempt holding the lease writes metrics. Nothing here changes the checkpoint's
model files: a failed or canceled evaluation leaves the checkpoint as downloadable as it was.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from fine.spec import JobSpec
from learngene_store import evaluations
from learngene_store.blobs import copy_out, make_blob_store
from learngene_store.db import session_factory
from learngene_store.models import Checkpoint, Job
from worker import inputs
from worker.lease import Ends, Lease, guarded, redispatch, worker_id
from worker.outputs import store_files
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class EvalLease(Lease):
    """The heartbeat of an evaluation: written to the checkpoint row, progress to the job's event log."""

    def __init__(self, settings: WorkerSettings, checkpoint_id: str, job_id: str, lease: str) -> None:
        super().__init__(settings, job_id, lease)
        self.name = f"eval-{checkpoint_id}"
        self.checkpoint_id = checkpoint_id

    def beat(self, session: Session, latest: dict[str, Any] | None,
             ended: list[dict[str, Any]]) -> tuple[bool, bool]:
        return evaluations.beat(session, self.checkpoint_id, self.lease, latest, ended)


@dataclass
class EvalInputs:
    model: Any  # fine.model.DiT, dense
    spec: JobSpec
    config: dict[str, Any]  # the checkpoint's config.json
    train: Any  # fine.data.ImageData
    test: Any
    classes: list[int] | None = None  # rows of the sample grid (None: the train split's classes)
    timings: dict[str, float] = field(default_factory=dict)  # the job's phases so far (for metrics.json)


def evaluate_phase(settings: WorkerSettings, checkpoint_id: str, job_id: str, token: str, store,  # type: ignore[no-untyped-def]
                   work: Path, get_inputs: Callable[[], EvalInputs]) -> str:
    """Evaluate under the evaluation lease `token`; returns what happened (for logs and tests)."""
    Session = session_factory(settings)
    lease = EvalLease(settings, checkpoint_id, job_id, token)

    def write(change):  # type: ignore[no-untyped-def]
        with Session() as session:
            return change(session)

    ends = Ends(canceled=lambda: write(lambda s: evaluations.mark_canceled(s, checkpoint_id, token)),
                failed=lambda why: write(lambda s: evaluations.fail(s, checkpoint_id, token, why)),
                released=lambda why: write(lambda s: evaluations.release(s, checkpoint_id, token, why)),
                redispatch=lambda: _redispatch(settings, checkpoint_id),
                limit_hint="ask for fewer eval_images or sample_steps")

    def body() -> str:
        from fine.pipeline import JobCanceled, evaluate_and_save

        started = time.time()
        lease.flush()  # still ours? (a redelivered job registers nothing, and so evaluates nothing)
        if lease.lost:
            return "abandoned: lease lost"
        lease.set_phase("eval")
        got = get_inputs()
        done = evaluate_and_save(got.model, got.spec, got.test, got.train, got.config, out_dir=work,
                                 classes=got.classes, progress=lease.progress, should_stop=lease.should_stop,
                                 timings=got.timings, precision=settings.sample_precision)
        if lease.should_stop():
            raise JobCanceled("canceled after evaluation")
        rows = store_files(store, done.files)
        lease.stop()
        spent = {"evaluate_s": round(time.time() - started, 3)}
        with Session() as session:
            if not evaluations.finish(session, checkpoint_id, token, done.metrics, done.config, rows, spent):
                return "abandoned: lease lost before the metrics were written"
        return "ready"

    try:
        with lease:
            return guarded(settings, lease, body, ends, f"evaluation of {checkpoint_id}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _redispatch(settings: WorkerSettings, checkpoint_id: str) -> None:
    from dispatch.broker import enqueue_evaluation

    redispatch(settings, f"evaluation of {checkpoint_id}",
               lambda celery: enqueue_evaluation(celery, settings, checkpoint_id),
               lambda session: evaluations.mark_dispatched(session, checkpoint_id))


def evaluate_checkpoint(settings: WorkerSettings, checkpoint_id: str) -> str:
    """The `worker.evaluate` task: claim a pending evaluation and run it from the stored checkpoint."""
    with session_factory(settings)() as session:
        claim = evaluations.claim(session, checkpoint_id, worker_id(settings))
    if claim.lease is None or claim.checkpoint is None:
        log.info("evaluation of %s skipped: %s", checkpoint_id, claim.reason)
        return f"skipped: {claim.reason}"
    job_id = claim.checkpoint.job_id
    work = settings.work_dir / f"eval-{checkpoint_id}-{claim.lease[:8]}"
    store = make_blob_store(settings)
    return evaluate_phase(settings, checkpoint_id, job_id, claim.lease, store, work,
                          lambda: _stored_inputs(settings, checkpoint_id, store, work / "checkpoint"))


def _stored_inputs(settings: WorkerSettings, checkpoint_id: str, store, directory: Path) -> EvalInputs:  # type: ignore[no-untyped-def]
    """The registered dense checkpoint (from the blob store), its job's spec and its dataset."""
    from fine.formats import load_dense

    cache = settings.resolved_cache_dir
    with session_factory(settings)() as session:
        ckpt = session.get(Checkpoint, checkpoint_id)
        job = session.get(Job, ckpt.job_id) if ckpt is not None else None
        if ckpt is None or job is None:
            raise LookupError(f"checkpoint {checkpoint_id} is no longer in the registry")
        for fmt, name in (("dense", "model.safetensors"), ("config", "config.json")):
            f = ckpt.file(fmt)
            if f is None:
                raise LookupError(f"checkpoint {checkpoint_id} has no {fmt} file")
            copy_out(store, f.sha256, directory / name)
        source = inputs.dataset_name(session, store, job.dataset, cache)
        spec = inputs.job_spec(job)
        timings = dict(job.timings or {})
    model, config = load_dense(directory)
    train, test = inputs.load_splits(source, cache)
    return EvalInputs(model, spec, {k: v for k, v in config.items() if k != "metrics"}, train, test, None, timings)
