"""Spec validation against the registry: every rule says what is wrong and what is allowed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from learngene_store.catalog import newest_learngene
from learngene_store.datasets import DatasetError, parse_name
from learngene_store.models import Dataset, Learngene
from service.errors import Problem
from service.schemas import METHODS, JobSpec, PretrainSpec

LIMITS = {
    "depth": (1, 64),
    "sigma_steps": (0, 20_000),
    "subset_size": (8, 100_000),
    "finetune_steps": (0, 50_000),
    "seed": (0, 2**31 - 1),
    "batch_size": (1, 1024),
    "eval_images": (0, 10_000),
    "sample_steps": (1, 1000),
}


@dataclass
class Resolved:
    learngene: Learngene
    dataset: Dataset
    spec: dict
    warnings: list[str] = field(default_factory=list)


def _invalid(errors: list[tuple[str, str]]) -> Problem:
    return Problem(422, "; ".join(m for _, m in errors), type_="invalid-spec", title="Invalid spec",
                   errors=[{"field": f, "message": m} for f, m in errors])


def validate_spec(session: Session, spec: JobSpec) -> Resolved:
    errors: list[tuple[str, str]] = []
    for name, (lo, hi) in LIMITS.items():
        value = getattr(spec, name)
        if not lo <= value <= hi:
            errors.append((name, f"{name} must be between {lo} and {hi}, got {value}"))
    if spec.method not in METHODS:
        errors.append(("method", f"method must be one of {', '.join(METHODS)}, got {spec.method!r}"))

    if spec.learngene is None:
        lg = newest_learngene(session)
        if lg is None:
            raise Problem(409, "no learngene set is registered yet; register one with POST /v1/learngenes "
                               "(or ship learngenes/default/learngene.safetensors and restart)",
                          type_="no-learngene")
    else:
        lg = session.get(Learngene, spec.learngene)
        if lg is None:
            ids = [row.id for row in session.query(Learngene.id).limit(20)]
            errors.append(("learngene", f"unknown learngene {spec.learngene!r}; registered: "
                                        f"{', '.join(ids) or 'none'} (GET /v1/learngenes)"))
            raise _invalid(errors)

    hs, hd = spec.hidden_size, lg.head_dim
    if hs < hd or hs % hd or hs > lg.hidden_size:
        errors.append(("hidden_size", f"hidden_size must be a multiple of {hd} and at most {lg.hidden_size} "
                                      f"for learngene {lg.id}, got {hs}"))
    elif spec.num_heads is not None and spec.num_heads != hs // hd:
        errors.append(("num_heads", f"num_heads must be hidden_size / head size = {hs} / {hd} = {hs // hd} "
                                    f"for learngene {lg.id}, got {spec.num_heads}"))

    ds = _dataset_errors(session, spec.dataset, errors)
    if ds is not None and ds.image_size % lg.patch_size:
        errors.append(("dataset", f"dataset {ds.id} has {ds.image_size}x{ds.image_size} images, not a "
                                  f"multiple of learngene {lg.id}'s patch size {lg.patch_size}; choose "
                                  "a dataset whose image side is, or another learngene"))
    if errors:
        raise _invalid(errors)
    assert ds is not None
    warnings = []
    if lg.widths and hs not in lg.widths:
        warnings.append(f"width {hs} was not trained in learngene {lg.id} (trained widths: "
                        f"{', '.join(map(str, lg.widths))}); expect a weaker start")
    if spec.method != "fine" and spec.sigma_steps > 0:
        warnings.append(f"method {spec.method} has no sigma stage: sigma_steps={spec.sigma_steps} is ignored "
                        "(only finetune_steps train)")
    resolved = spec.model_dump()
    resolved["learngene"] = lg.id
    resolved["num_heads"] = hs // hd
    return Resolved(lg, ds, resolved, warnings)


PRETRAIN_LIMITS = {
    "depth": (1, 64),
    "head_dim": (8, 256),
    "steps": (1, 200_000),
    "batch_size": (1, 1024),
    "seed": (0, 2**31 - 1),
    "eval_images": (8, 10_000),
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def _dataset_errors(session: Session, name: str, errors: list[tuple[str, str]]) -> Dataset | None:
    try:
        base, classes = parse_name(name)
    except DatasetError as e:
        errors.append(("dataset", str(e)))
        return None
    ds = session.get(Dataset, base)
    if ds is None:
        known = [row.id for row in session.query(Dataset.id).filter(Dataset.kind == "builtin")]
        errors.append(("dataset", f"unknown dataset {base!r}: use one of {', '.join(known)} or the id of an "
                                  "uploaded dataset (POST /v1/datasets)"))
        return None
    bad = [c for c in classes or [] if not 0 <= c < ds.num_classes]
    if bad:
        errors.append(("dataset", f"classes {bad} out of range: {ds.id} has classes 0-{ds.num_classes - 1}"))
    return ds


def validate_pretrain(session: Session, spec: PretrainSpec) -> dict:
    """Check a pre-training spec; returns it completed with the dataset's image geometry."""
    errors: list[tuple[str, str]] = []
    for name, (lo, hi) in PRETRAIN_LIMITS.items():
        value = getattr(spec, name)
        if not lo <= value <= hi:
            errors.append((name, f"{name} must be between {lo} and {hi}, got {value}"))
    hs, hd = spec.hidden_size, spec.head_dim
    if hd > 0 and (hs < hd or hs % hd or hs > 1024):
        errors.append(("hidden_size", f"hidden_size must be a multiple of head_dim {hd} and at most 1024, got {hs}"))
    if not 1 <= spec.rank <= max(1, hs):
        errors.append(("rank", f"rank must be between 1 and hidden_size {hs}, got {spec.rank}"))
    bad_widths = [w for w in spec.widths if hd <= 0 or w < hd or w % hd or w > hs]
    if bad_widths:
        errors.append(("widths", f"widths must be multiples of head_dim {hd} up to hidden_size {hs}, got "
                                 f"{bad_widths}"))
    if not 0 < spec.lr <= 1:
        errors.append(("lr", f"lr must be in (0, 1], got {spec.lr}"))
    if not 0 <= spec.warmup <= spec.steps:
        errors.append(("warmup", f"warmup must be between 0 and steps ({spec.steps}), got {spec.warmup}"))
    if not 0 <= spec.ema_decay < 1:
        errors.append(("ema_decay", f"ema_decay must be in [0, 1), got {spec.ema_decay}"))
    if not _NAME.match(spec.name):
        errors.append(("name", f"name must be 1-40 lowercase letters, digits or dashes, got {spec.name!r}"))
    ds = _dataset_errors(session, spec.dataset, errors)
    if ds is not None and (spec.patch_size < 1 or ds.image_size % spec.patch_size):
        errors.append(("patch_size", f"patch_size must divide the image side {ds.image_size} of {ds.id}, got "
                                     f"{spec.patch_size}"))
    if errors:
        raise _invalid(errors)
    assert ds is not None
    return {**spec.model_dump(), "widths": sorted(set(spec.widths) - {hs}), "image_size": ds.image_size,
            "in_channels": ds.channels, "num_classes": ds.num_classes}
