"""Spec validation against the registry: every rule says what is wrong and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatch.settings import DispatchSettings
from dispatch.webhooks import url_refusal
from fine.spec import DEFAULT_LEARNGENE, DatasetError, JobSpec, PretrainSpec
from fine.spec import parse_dataset_name as parse_name
from learngene_store import choice
from learngene_store.accounts import DEFAULT_ALIAS, alias_target
from learngene_store.models import Dataset, Learngene, User
from service.access import can_see_dataset, can_see_learngene, visible_learngenes
from service.errors import Problem


@dataclass
class Resolved:
    learngene: Learngene
    dataset: Dataset
    spec: dict
    warnings: list[str] = field(default_factory=list)


def _invalid(errors: list[tuple[str, str]]) -> Problem:
    return Problem(422, "; ".join(m for _, m in errors), type_="invalid-spec", title="Invalid spec",
                   errors=[{"field": f, "message": m} for f, m in errors])


def validate_spec(session: Session, spec: JobSpec, user: User, settings: DispatchSettings | None = None) -> Resolved:
    """Check a job spec for `user`: the learngene (id, alias, or else the best fit for the dataset, see
    learngene_store/choice.py) and the dataset must be ones they see; a webhook must be one this server
    calls (`settings`' policy)."""
    errors = spec.errors()
    if settings is not None and spec.webhook is not None and not any(f == "webhook" for f, _ in errors):
        refusal = url_refusal(spec.webhook, settings)
        if refusal:
            errors.append(("webhook", refusal))
    ds = _dataset_errors(session, spec.dataset, errors, user)

    if spec.learngene is None:
        lg, record = _choose(session, spec, user, ds)
    else:
        lg = session.get(Learngene, spec.learngene) or alias_target(session, spec.learngene)
        if lg is None or not can_see_learngene(user, lg):
            ids = session.execute(visible_learngenes(select(Learngene.id), user).limit(20)).scalars()
            errors.append(("learngene", f"unknown learngene {spec.learngene!r}; registered: "
                                        f"{', '.join(ids) or 'none'} (GET /v1/learngenes)"))
            raise _invalid(errors)
        record = choice.named(lg, spec.learngene)

    errors += spec.learngene_errors(lg.head_dim, lg.hidden_size, lg.id)
    if ds is not None and ds.image_size % lg.patch_size:
        p = lg.patch_size
        near = sorted({max(p, ds.image_size // p * p), ds.image_size // p * p + p})
        errors.append(("dataset", f"dataset {ds.id} has {ds.image_size}x{ds.image_size} images, not a "
                                  f"multiple of learngene {lg.id}'s patch size {p}; any square side that is a "
                                  f"multiple of {p} works (e.g. {' or '.join(map(str, near))}): choose a dataset "
                                  "whose image side is, or another learngene"))
    if errors:
        raise _invalid(errors)
    assert ds is not None
    hs = spec.hidden_size
    warnings = []
    if lg.widths and hs not in lg.widths:
        warnings.append(f"width {hs} was not trained in learngene {lg.id} (trained widths: "
                        f"{', '.join(map(str, lg.widths))}); expect a weaker start")
    warnings += spec.warnings()
    resolved = spec.model_dump()
    resolved["learngene"] = lg.id
    resolved["num_heads"] = hs // lg.head_dim
    resolved[choice.CHOICE_KEY] = record
    return Resolved(lg, ds, resolved, warnings)


def _choose(session: Session, spec: JobSpec, user: User, ds: Dataset | None) -> tuple[Learngene, dict]:
    """The best-fitting learngene the user may build from; when none can build the job, the `default`
    alias's target, whose errors then say what is wrong."""
    default = alias_target(session, DEFAULT_ALIAS)
    if ds is not None:
        picked = choice.choose(choice.choosable(session, user.name, ds), ds, spec, default)
        if picked is not None:
            return picked.learngene, picked.record
    if default is None:
        raise Problem(409, "no learngene set is registered yet (no `default` alias); an admin registers one "
                           f"with POST /v1/learngenes (or ships {DEFAULT_LEARNGENE} and "
                           "restarts)", type_="no-learngene")
    return default, {"chosen": default.id, "by": "default", "reason": "no registered learngene can build this job; "
                     "checked against the `default` alias", "candidates": []}


def _dataset_errors(session: Session, name: str, errors: list[tuple[str, str]], user: User) -> Dataset | None:
    try:
        base, classes = parse_name(name)
    except DatasetError as e:
        errors.append(("dataset", str(e)))
        return None
    ds = session.get(Dataset, base)
    if ds is None or not can_see_dataset(user, ds):
        known = [row.id for row in session.query(Dataset.id).filter(Dataset.kind == "builtin")]
        errors.append(("dataset", f"unknown dataset {base!r}: use one of {', '.join(known)} or the id of an "
                                  "uploaded dataset (POST /v1/datasets)"))
        return None
    bad = [c for c in classes or [] if not 0 <= c < ds.num_classes]
    if bad:
        errors.append(("dataset", f"classes {bad} out of range: {ds.id} has classes 0-{ds.num_classes - 1}"))
    return ds


def validate_pretrain(session: Session, spec: PretrainSpec, user: User) -> dict:
    """Check a pre-training spec; returns it completed with the dataset's image geometry (and whether
    the set it registers is public: an admin's are)."""
    errors = spec.errors()
    hs = spec.hidden_size
    ds = _dataset_errors(session, spec.dataset, errors, user)
    if ds is not None and (spec.patch_size < 1 or ds.image_size % spec.patch_size):
        errors.append(("patch_size", f"patch_size must divide the image side {ds.image_size} of {ds.id}, got "
                                     f"{spec.patch_size}"))
    if errors:
        raise _invalid(errors)
    assert ds is not None
    return {**spec.model_dump(), "widths": sorted(set(spec.widths) - {hs}), "image_size": ds.image_size,
            "in_channels": ds.channels, "num_classes": ds.num_classes, "public": user.is_admin}
