"""Which learngene a job that names none is built from (torch-free: the API ranks, the worker measures).

Fit comes first, read from the registry columns alone:

    tier 0  same channels and image size as the dataset
    tier 1  same channels, another image size (the position function is evaluated on the new grid)
    tier 2  other channels (1 <-> C: the patch embedding is spread, the final layer averaged)

and, within a tier, a learngene that trained the asked width beats one that did not (an untrained
width is a weak start: DESIGN.md's probe, held-out 0.318 against 0.099). A learngene that cannot build
the job at all (side not a multiple of its patch size, channels not 1 <-> C, width or heads that do
not fit) is no candidate. The `default` alias wins whenever it fits as well as the best, so admins
keep control of what most jobs use. Several non-default learngenes tied on fit are measured by the
worker before it trains (worker/learngene_choice.py): the held-out loss of each assembled
descendant on a few target images, lowest wins; `settle` records that result.

What a job records, in `spec["learngene_choice"]`:
    {"chosen": id, "by": "named" | "default" | "fit" | "measured" | "pending" | "only-fit",
     "reason": one sentence, "candidates": [{"id", "fit", "tier", "width_trained"}, ...],
     "measure": [ids] (pending only), "losses": {id: loss} (measured only)}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import literal, or_, select, update
from sqlalchemy.orm import Session

from fine.spec import JobSpec
from learngene_store import events
from learngene_store.models import Dataset, Job, Learngene, utcnow

TIERS = ("same channels and image size", "same channels, another image size",
         "other channels (adapted 1 <-> C)")
MAX_MEASURED = 4  # tied learngenes the worker measures (newest first); more are listed, not measured
MAX_LISTED = 10  # candidates recorded in the job
MAX_SCANNED = 500  # learngenes read from the registry per choice
# The measurement (fine.choice.candidate_losses): this many target images, each at every one of these
# timesteps with fixed noise, seed fixed; the null label, so that label semantics do not count.
MEASURE_IMAGES = 64
MEASURE_TIMESTEPS = (50, 250, 500, 750)
MEASURE_SEED = 0
CHOICE_KEY = "learngene_choice"


@dataclass(frozen=True)
class Fit:
    learngene: Learngene
    tier: int
    width_trained: bool

    @property
    def key(self) -> tuple[int, bool]:
        return self.tier, not self.width_trained

    def describe(self) -> str:
        lg = self.learngene
        trained = "width trained" if self.width_trained else "width not trained"
        return (f"{TIERS[self.tier]} ({lg.in_channels}ch {lg.image_size}x{lg.image_size}, patch {lg.patch_size}, "
                f"source {lg.source_dataset}; {trained})")

    def entry(self) -> dict[str, Any]:
        return {"id": self.learngene.id, "fit": self.describe(), "tier": self.tier,
                "width_trained": self.width_trained}


@dataclass(frozen=True)
class Choice:
    learngene: Learngene  # the chosen one (provisional while `measure` is not empty)
    record: dict[str, Any]  # what the job stores under spec["learngene_choice"]

    @property
    def measure(self) -> list[str]:
        return list(self.record.get("measure", []))


def channels_adapt(src: int, dst: int) -> bool:
    """fine.assembly.adapt_body adapts equal channel counts and 1 <-> C, nothing else."""
    return src == dst or 1 in (src, dst)


def width_trained(lg: Learngene, hidden_size: int) -> bool:
    """Did pre-training train this prefix width? (No list: the set claims nothing, so it counts as trained.)"""
    return not lg.widths or hidden_size == lg.hidden_size or hidden_size in lg.widths


def fit_of(lg: Learngene, ds: Dataset, spec: JobSpec) -> Fit | None:
    """How well `lg` fits the job on `ds`; None when it cannot build it."""
    if ds.image_size % lg.patch_size or not channels_adapt(lg.in_channels, ds.channels):
        return None
    if spec.learngene_errors(lg.head_dim, lg.hidden_size, lg.id):
        return None
    if lg.in_channels != ds.channels:
        tier = 2
    else:
        tier = 0 if lg.image_size == ds.image_size else 1
    return Fit(lg, tier, width_trained(lg, spec.hidden_size))


def choosable(session: Session, owner: str, ds: Dataset) -> list[Learngene]:
    """Public learngenes and the owner's own (an admin's choice too: never another user's private set)
    whose patch size divides the side, newest first (the spec's own numbers never reach the SQL: they
    are unbounded until checked)."""
    q = (select(Learngene)
         .where(or_(Learngene.public.is_(True), Learngene.owner == owner), Learngene.patch_size > 0,
                literal(ds.image_size) % Learngene.patch_size == 0)
         .order_by(Learngene.created_at.desc(), Learngene.id).limit(MAX_SCANNED))
    return list(session.execute(q).scalars())


def choose(learngenes: list[Learngene], ds: Dataset, spec: JobSpec, default: Learngene | None) -> Choice | None:
    """Rank `learngenes` (newest first) for a job on `ds`; None when none can build it."""
    fits = [f for f in (fit_of(lg, ds, spec) for lg in learngenes) if f is not None]
    if not fits:
        return None
    best = min(f.key for f in fits)
    top = [f for f in fits if f.key == best]
    listed = [f.entry() for f in sorted(fits, key=lambda f: f.key)[:MAX_LISTED]]  # stable: newest first per key
    what = top[0].describe()
    default_fit = next((f for f in fits if default is not None and f.learngene.id == default.id), None)
    if default_fit is not None and default_fit.key == best:
        also = [f.learngene.id for f in top if f is not default_fit]
        reason = (f"the `default` alias {default_fit.learngene.id} fits as well as any registered learngene: "
                  f"{default_fit.describe()}" + (f"; {len(also)} other(s) fit equally ({', '.join(also[:5])}) "
                                                 "and the default wins a tie" if also else ""))
        return Choice(default_fit.learngene, {"chosen": default_fit.learngene.id, "by": "default", "reason": reason,
                                              "candidates": listed})
    versus = _versus_default(default, default_fit, ds)
    if len(top) == 1:
        chosen = top[0].learngene
        reason = f"{chosen.id} fits best: {what}; {versus}"
        return Choice(chosen, {"chosen": chosen.id, "by": "fit", "reason": reason, "candidates": listed})
    tied = [f.learngene.id for f in top]
    if spec.method == "scratch":  # only the geometry of the learngene is used: nothing to measure
        reason = (f"{len(tied)} learngenes fit equally ({', '.join(tied[:5])}): {what}; {versus}; method scratch "
                  f"uses no learngene weights, so the newest, {tied[0]}, gives the geometry")
        return Choice(top[0].learngene, {"chosen": tied[0], "by": "fit", "reason": reason, "candidates": listed})
    measure = tied[:MAX_MEASURED]
    unmeasured = f" (the {MAX_MEASURED} newest of {len(tied)})" if len(tied) > MAX_MEASURED else ""
    reason = (f"{len(tied)} learngenes fit equally: {what}; {versus}; the worker measures{unmeasured} "
              f"{', '.join(measure)}: held-out loss of each assembled descendant on {MEASURE_IMAGES} target "
              f"images at timesteps {', '.join(map(str, MEASURE_TIMESTEPS))} (seed {MEASURE_SEED}), lowest wins")
    return Choice(top[0].learngene, {"chosen": tied[0], "by": "pending", "reason": reason, "candidates": listed,
                                     "measure": measure})


def _versus_default(default: Learngene | None, default_fit: Fit | None, ds: Dataset) -> str:
    if default is None:
        return "no `default` alias is set"
    if default_fit is None:
        return (f"the `default` alias {default.id} ({default.in_channels}ch {default.image_size}x{default.image_size}, "
                f"patch {default.patch_size}) cannot build this job on {ds.id}")
    return f"the `default` alias {default.id} fits less well: {default_fit.describe()}"


def named(lg: Learngene, asked: str) -> dict[str, Any]:
    how = "by id" if asked == lg.id else f"as {asked!r}"
    return {"chosen": lg.id, "by": "named", "reason": f"named in the request ({how})", "candidates": []}


def measured(choice: dict[str, Any], losses: dict[str, float], skipped: dict[str, str]) -> dict[str, Any]:
    """The pending record once the worker measured `losses` (id -> loss; `skipped`: id -> why not)."""
    chosen = min(losses, key=lambda k: (losses[k], k))
    ranked = ", ".join(f"{k} {v:.4f}" for k, v in sorted(losses.items(), key=lambda kv: kv[1]))
    why_not = "".join(f"; {k} not measured: {why}" for k, why in skipped.items())
    reason = (f"{choice['reason'].split('; the worker measures')[0]}; measured held-out loss of the assembled "
              f"descendant on {MEASURE_IMAGES} target images at timesteps "
              f"{', '.join(map(str, MEASURE_TIMESTEPS))} (seed {MEASURE_SEED}): {ranked}{why_not}; "
              f"{chosen} is lowest")
    out = {k: v for k, v in choice.items() if k != "measure"}
    return {**out, "chosen": chosen, "by": "measured", "reason": reason,
            "losses": {k: round(v, 6) for k, v in losses.items()}}


def settle(session: Session, job_id: str, lease: str, learngene_id: str, record: dict[str, Any]) -> bool:
    """Point a running job at the measured learngene (only while this attempt owns it), with an event."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return False
    spec = {**job.spec, "learngene": learngene_id, CHOICE_KEY: record}
    res = session.execute(update(Job).where(Job.id == job_id, Job.lease == lease, Job.status == "running")
                          .values(learngene_id=learngene_id, spec=spec, updated_at=utcnow()))
    if res.rowcount == 1:
        events.record(session, job_id, "learngene", {"learngene": learngene_id, "by": record["by"],
                                                      "reason": record["reason"]})
    session.commit()
    return res.rowcount == 1
