"""A job whose learngene the API left to measurement (several fit equally): measure, then record the choice.

The API ranks the learngenes by fit and, on a tie that the `default` alias is not part of, stores the
tied ids in `spec["learngene_choice"]["measure"]` (learngene_store/choice.py). Before the job trains, the
worker assembles each candidate's descendant and keeps the one with the lowest held-out loss on a few
target images (fine/choice.py); the job row then names it, with the losses in its reason.
"""

from __future__ import annotations

import logging

from learngene_store import choice
from learngene_store.blobs import BlobStore
from learngene_store.db import session_factory
from learngene_store.models import Job, Learngene
from worker import inputs
from worker.lease import Lease
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def settle_learngene(settings: WorkerSettings, job: Job, store: BlobStore, lease: Lease) -> bool:
    """Measure a pending choice and point `job` (the row and this in-memory copy) at the winner; False
    when there was nothing to measure."""
    record = (job.spec or {}).get(choice.CHOICE_KEY) or {}
    ids = record.get("measure") or []
    if record.get("by") != "pending" or not ids:
        return False
    from fine.choice import candidate_losses

    lease.set_phase("choosing")
    Session = session_factory(settings)
    cache = settings.resolved_cache_dir
    learngenes = {}
    skipped: dict[str, str] = {}
    with Session() as session:
        for lg_id in ids:
            if session.get(Learngene, lg_id) is None:
                skipped[lg_id] = "no longer in the registry"
                continue
            learngenes[lg_id] = inputs.learngene(session, store, lg_id, cache)  # kept: the winner trains next
        dataset = inputs.dataset_name(session, store, job.dataset, cache)
    if not learngenes:
        raise LookupError(f"none of the learngenes to choose from is left in the registry: {', '.join(ids)}")
    train, _ = inputs.load_splits(dataset, cache)
    losses = candidate_losses(learngenes, inputs.job_spec(job), train,
                              n_images=choice.MEASURE_IMAGES, timesteps=choice.MEASURE_TIMESTEPS,
                              seed=choice.MEASURE_SEED)
    settled = choice.measured(record, losses, skipped)
    chosen = settled["chosen"]
    log.info("job %s: learngene %s chosen by measurement %s", job.id, chosen, losses)
    with Session() as session:
        if not choice.settle(session, job.id, lease.lease, chosen, settled):
            return True  # another attempt owns the job now: the lease thread stops this one
    job.learngene_id = chosen
    job.spec = {**job.spec, "learngene": chosen, choice.CHOICE_KEY: settled}
    return True
