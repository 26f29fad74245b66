"""One descendant, end to end: assemble -> sigma stage -> (fine-tune) -> evaluate -> save.

This is the unit of work behind `fine init` and behind every service job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fine.assembly import METHODS, assemble
from fine.data import DataError, ImageData, load, parse_name
from fine.diffusion import Diffusion
from fine.formats import LearngeneSet, load_learngene, save_dense, save_factored
from fine.images import save_grid, to_uint8
from fine.model import DiT
from fine.training import JobCanceled, OptimConfig, ProgressFn, StopFn, sigma_stage, train_all

__all__ = ["InitResult", "JobCanceled", "init_descendant", "evaluate", "sample_grid"]

MAX_STEPS = 100_000


@dataclass
class InitResult:
    files: dict[str, Path]
    metrics: dict
    config: dict
    timings: dict[str, float] = field(default_factory=dict)


def new_task(learngene: LearngeneSet, target: ImageData, dataset: str) -> bool:
    """Does the target need labels the ancestry never trained (so the label table must train)?"""
    src_base, src_classes = parse_name(str(learngene.meta.get("source_dataset", "")))
    base, _ = parse_name(dataset)
    if base != src_base:
        return True
    seen = set(src_classes) if src_classes is not None else set(range(learngene.cfg.num_classes))
    return not set(target.labels.unique().tolist()) <= seen


def sample_grid(
    model: DiT, path: Path, per_class: int = 8, steps: int = 50, cfg_scale: float = 2.0, seed: int = 0,
    classes: list[int] | None = None,
) -> Path:
    """A PNG grid with one row per class (DDIM, classifier-free guidance)."""
    classes = classes if classes is not None else list(range(model.cfg.num_classes))
    y = torch.tensor(classes).repeat_interleave(per_class)
    shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    x = Diffusion().sample(model, y, shape, steps=steps, cfg_scale=cfg_scale,
                           generator=torch.Generator().manual_seed(seed))
    return save_grid(to_uint8(x), path, rows=len(classes))


def evaluate(
    model: DiT,
    test: ImageData,
    dataset: str,
    n_images: int = 500,
    sample_steps: int = 50,
    cfg_scale: float = 1.5,
    seed: int = 0,
    progress: ProgressFn | None = None,
    train: ImageData | None = None,
) -> dict:
    """Held-out denoising loss at fixed seeds and, where a feature classifier exists, FD/KID."""
    from fine import metrics

    out: dict = {"heldout_loss": metrics.heldout_loss(model, Diffusion(), test, n=min(n_images, len(test)), seed=seed)}
    clf = metrics.load_feature_classifier(dataset)
    if clf is not None and n_images > 0:
        real = test.subset(min(n_images, len(test)), seed=seed)  # class-balanced, unlike the first n
        g = torch.Generator().manual_seed(seed)
        y = real.labels[torch.randperm(len(real), generator=g)]
        shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
        made = []
        for i in range(0, len(y), 100):
            made.append(Diffusion().sample(model, y[i : i + 100], shape, steps=sample_steps, cfg_scale=cfg_scale,
                                           generator=g))
            if progress is not None:
                progress("eval", min(i + 100, len(y)), len(y), None)
        out.update(metrics.named(metrics.sample_quality(torch.cat(made), real, clf), dataset))
        if train is not None:  # the floor: real train vs real test at the same n
            fl = metrics.floor(train, test, clf, len(y), seed=seed)
            out.update({f"{k}_floor": v for k, v in metrics.named(fl, dataset).items() if k != "n"})
        out["eval_images"] = len(y)
        out["sample_steps"] = sample_steps
        out["cfg_scale"] = cfg_scale
    return out


def init_descendant(
    learngene_path: Path | str,
    dataset: str,
    depth: int,
    hidden_size: int,
    *,
    method: str = "fine",
    sigma_steps: int = 300,
    subset_size: int = 5000,
    finetune_steps: int = 0,
    seed: int = 0,
    train_bias: bool = True,
    batch_size: int = 64,
    eval_images: int = 500,
    sample_steps: int = 50,
    out_dir: Path | str,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    learngene: LearngeneSet | None = None,
) -> InitResult:
    """Build, train, evaluate and save one descendant; raises JobCanceled on cancel."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    for name, value in (("sigma_steps", sigma_steps), ("finetune_steps", finetune_steps)):
        if not 0 <= value <= MAX_STEPS:
            raise ValueError(f"{name} must be between 0 and {MAX_STEPS}, got {value}")
    if subset_size < 1:
        raise ValueError(f"subset_size must be >= 1, got {subset_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.time()
    lg = learngene or load_learngene(learngene_path)
    train, test = load(dataset, "train"), load(dataset, "test")
    if len(test) == 0 or len(train) == 0:
        raise DataError(f"{dataset}: no images left after the class filter")
    if train.image_size % lg.cfg.patch_size:
        raise DataError(f"{dataset}: image side {train.image_size} is not a multiple of the patch size {lg.cfg.patch_size}")
    model = assemble(lg.model, depth, hidden_size, method, image_size=train.image_size,
                     in_channels=train.channels, num_classes=max(train.num_classes, 1), seed=seed)
    timings["assemble"] = time.time() - t0
    subset = train.subset(subset_size, seed=seed)
    retrain_labels = new_task(lg, train, dataset)
    ran_sigma = 0
    if method == "fine" and sigma_steps > 0:
        t = time.time()
        sigma_stage(model, subset, sigma_steps, train_bias=train_bias, train_labels=retrain_labels,
                    optim=OptimConfig(lr=3e-3, warmup=20, batch_size=batch_size), seed=seed,
                    progress=progress, should_stop=should_stop)
        ran_sigma = sigma_steps
        timings["sigma"] = time.time() - t
    factored_model = model if model.genes is not None else None
    if finetune_steps > 0:
        t = time.time()
        if model.genes is not None:
            model = model.materialize()
        train_all(model, subset, finetune_steps, optim=OptimConfig(lr=1e-3, warmup=50, batch_size=batch_size),
                  seed=seed + 1, phase="finetune", progress=progress, should_stop=should_stop)
        timings["finetune"] = time.time() - t
    if should_stop is not None and should_stop():
        raise JobCanceled("canceled before evaluation")
    t = time.time()
    model.eval()
    metrics = evaluate(model, test, dataset, n_images=eval_images, sample_steps=sample_steps, seed=seed,
                       progress=progress, train=train) if eval_images > 0 else {}
    timings["eval"] = time.time() - t
    t = time.time()
    files = {"samples": sample_grid(model, out / "samples.png", steps=sample_steps, seed=seed,
                                    classes=sorted(train.labels.unique().tolist()))}
    timings["samples"] = time.time() - t
    meta = {
        "dataset": dataset, "learngene_id": lg.id, "learngene_sha256": lg.sha256, "method": method,
        "steps": {"sigma": ran_sigma, "finetune": finetune_steps}, "subset_size": len(subset), "seed": seed,
        "train_bias": train_bias, "train_labels": retrain_labels and ran_sigma > 0, "metrics": metrics,
    }
    config = save_dense(out, model, meta)
    files["dense"], files["config"] = out / "model.safetensors", out / "config.json"
    if factored_model is not None and finetune_steps == 0:
        save_factored(out / "factored.safetensors", factored_model, lg, meta)
        files["factored"] = out / "factored.safetensors"
    timings["total"] = time.time() - t0
    metrics_doc = {**metrics, "timings_s": {k: round(v, 2) for k, v in timings.items()}}
    (out / "metrics.json").write_text(json.dumps(metrics_doc, indent=2, sort_keys=True) + "\n")
    files["metrics"] = out / "metrics.json"
    return InitResult(files=files, metrics=metrics, config=config, timings=timings)

