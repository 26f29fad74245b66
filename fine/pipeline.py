"""One descendant, end to end, in two parts: assemble -> sigma stage -> (fine-tune) -> save
(`train_and_save`: the checkpoint, ready to download), then evaluate (`evaluate_and_save`: held-out
loss, FD, the sample grid drawn from the evaluation's own samples, metrics added to config.json).

`init_descendant` runs both (`fine init`); a service job runs them as two phases (worker/runner.py,
worker/evaluation.py), registering the checkpoint in between.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fine.assembly import assemble
from fine.config import DiTConfig
from fine.data import DataError, ImageData, load, parse_name
from fine.diffusion import Diffusion
from fine.formats import LearngeneSet, load_learngene, save_dense, save_factored
from fine.images import save_grid, to_uint8
from fine.model import DiT
from fine.spec import ADAPT_LR_SCALE, ADAPT_PARTS, FINETUNE_OPTIM, SAMPLE_PRECISIONS, SIGMA_OPTIM, JobSpec, StageOptim
from fine.training import Ema, JobCanceled, OptimConfig, ProgressFn, StopFn, TrainState, sigma_stage, train_all

EVAL_CFG_SCALE = 1.5  # classifier-free guidance of the evaluation's samples, which the sample grid reuses

__all__ = ["DenseResume", "Evaluated", "Evaluation", "Hooks", "InitResult", "JobCanceled", "JobSpec", "Trained",
           "build_descendant", "dense_optim", "evaluate", "evaluate_and_save", "init_descendant", "run_evaluation",
           "sample_grid", "stage_optim", "train_and_save", "train_descendant"]


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


def adaptation_parts(learngene_cfg: DiTConfig, target: ImageData) -> tuple[str, ...]:
    """Body parts the sigma stage must also train: the input/output layers when the pixels differ."""
    same = (target.channels, target.image_size) == (learngene_cfg.in_channels, learngene_cfg.image_size)
    return () if same else ADAPT_PARTS


def sample_grid(
    model: DiT, path: Path, per_class: int = 8, steps: int = 50, cfg_scale: float = 2.0, seed: int = 0,
    classes: list[int] | None = None, sampler: str = "ddim", pool: tuple[torch.Tensor, torch.Tensor] | None = None,
    should_stop: StopFn | None = None,
) -> Path:
    """A PNG grid with one row per class (classifier-free guidance).

    `pool` = (images in [-1, 1], labels) already sampled, e.g. the evaluation's: each row takes its
    class's first `per_class` from it, and only what the pool lacks is sampled here. `should_stop` is
    checked at every sampler step (True raises JobCanceled)."""
    classes = classes if classes is not None else list(range(model.cfg.num_classes))
    rows: dict[int, list[torch.Tensor]] = {c: [] for c in classes}
    if pool is not None:
        images, labels = pool
        for c in classes:
            rows[c] = list(images[labels == c][:per_class])
    missing = [c for c in classes for _ in range(per_class - len(rows[c]))]
    if missing:
        shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
        x = Diffusion().sample(model, torch.tensor(missing), shape, steps=steps, sampler=sampler, cfg_scale=cfg_scale,
                               generator=torch.Generator().manual_seed(seed), progress=_stopper(should_stop))
        for c, img in zip(missing, x, strict=True):
            rows[c].append(img)
    grid = torch.stack([img for c in classes for img in rows[c]])
    return save_grid(to_uint8(grid), path, rows=len(classes))


def _stopper(should_stop: StopFn | None) -> Callable[[int, int], None] | None:
    """A sampler progress callback that raises JobCanceled once `should_stop()` says so."""
    if should_stop is None:
        return None

    def check(step: int, total: int) -> None:
        if should_stop():
            raise JobCanceled(f"stopped at sampler step {step} of {total}")

    return check


def resolve_precision(precision: str) -> str:
    """fp32 or bf16: `auto` is bf16 where the CPU has AMX tiles (bf16 matmuls several times the fp32 rate)."""
    if precision not in SAMPLE_PRECISIONS:
        raise ValueError(f"unknown sampling precision {precision!r}: use one of {', '.join(SAMPLE_PRECISIONS)}")
    if precision != "auto":
        return precision
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.13; absent means no answer
    return "bf16" if amx is not None and amx() else "fp32"


def sampling(precision: str) -> torch.autocast:
    """The context the evaluation samples in: CPU autocast to bfloat16, or nothing (fp32)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=resolve_precision(precision) == "bf16")


@dataclass
class Evaluation:
    """What an evaluation measured, and the images it generated (in [-1, 1], with their labels)."""

    metrics: dict
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None


def evaluate(model: DiT, test: ImageData, dataset: str, n_images: int = 500, sample_steps: int = 50,
             cfg_scale: float = EVAL_CFG_SCALE, seed: int = 0, progress: ProgressFn | None = None, train: ImageData | None = None,
             sampler: str = "ddim") -> dict:
    """Held-out denoising loss at fixed seeds and, where a feature classifier exists, FD/KID."""
    return run_evaluation(model, test, dataset, n_images, sample_steps, cfg_scale, seed, progress, train,
                          sampler).metrics


def run_evaluation(
    model: DiT,
    test: ImageData,
    dataset: str,
    n_images: int = 500,
    sample_steps: int = 50,
    cfg_scale: float = EVAL_CFG_SCALE,
    seed: int = 0,
    progress: ProgressFn | None = None,
    train: ImageData | None = None,
    sampler: str = "ddim",
    should_stop: StopFn | None = None,
    precision: str = "fp32",
) -> Evaluation:
    """`evaluate`, keeping the generated samples (for the sample grid); `should_stop` is checked before
    every batch of samples (True raises JobCanceled); `precision`: one of SAMPLE_PRECISIONS."""
    from fine import metrics

    if len(test) == 0:
        raise DataError(f"{dataset}: no held-out images (its test split is empty), so no metrics; "
                        "use a dataset with more images per class")
    out: dict = {"heldout_loss": metrics.heldout_loss(model, Diffusion(), test, n=min(n_images, len(test)), seed=seed)}
    clf = metrics.load_feature_classifier(dataset)
    if clf is None or n_images <= 0:
        return Evaluation(out)
    real = test.subset(min(n_images, len(test)), seed=seed)  # class-balanced, unlike the first n
    g = torch.Generator().manual_seed(seed)
    y = real.labels[torch.randperm(len(real), generator=g)]
    shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    made = []
    for i in range(0, len(y), 100):
        with sampling(precision):
            made.append(Diffusion().sample(model, y[i : i + 100], shape, steps=sample_steps, sampler=sampler,
                                           cfg_scale=cfg_scale, generator=g, progress=_stopper(should_stop)).float())
        if progress is not None:
            progress("eval", min(i + 100, len(y)), len(y), None)
    images = torch.cat(made)
    out.update(metrics.named(metrics.sample_quality(images, real, clf), dataset))
    if train is not None:  # the floor: real train vs real test at the same n
        fl = metrics.floor(train, test, clf, len(y), seed=seed)
        out.update({f"{k}_floor": v for k, v in metrics.named(fl, dataset).items() if k != "n"})
    out["eval_images"] = len(y)
    out["sample_steps"] = sample_steps
    out["sampler"] = sampler
    out["cfg_scale"] = cfg_scale
    out["sample_precision"] = resolve_precision(precision)
    return Evaluation(out, images, y)


@dataclass
class Hooks:
    """What a caller plugs into a descendant's training (the service: progress and cancel; benchmarks: curves)."""

    progress: ProgressFn | None = None  # (phase, step, total, loss) after every step of every phase
    should_stop: StopFn | None = None  # checked before every step; True raises JobCanceled
    after_init: Callable[[DiT], None] | None = None  # the assembled model, before the sigma stage
    after_sigma: Callable[[DiT], None] | None = None  # after the sigma stage (also when there is none)
    # (phase, step, model) after every step; the model is what the phase would return if it ended there
    # (the dense phase's EMA when it keeps one)
    on_step: Callable[[str, int, DiT], None] | None = None
    on_state: Callable[[Callable[[], DenseResume]], None] | None = None  # the dense phase's state getter (checkpoints)

    def step_fn(self, model: DiT) -> ProgressFn | None:
        """The progress callback of one phase: `progress`, then `on_step` with this phase's model."""
        if self.on_step is None:
            return self.progress
        progress, on_step = self.progress, self.on_step

        def step(phase: str, step: int, total: int, loss: float | None) -> None:
            if progress is not None:
                progress(phase, step, total, loss)
            on_step(phase, step, model)

        return step


@dataclass
class DenseResume:
    """A dense phase saved mid-run: the sigma stage is done, the weights and training state continue."""

    model: dict  # the dense model's state_dict (the raw weights; an EMA's are in `train`)
    train: TrainState


def stage_optim(stage: StageOptim, batch_size: int) -> OptimConfig:
    """A stage's optimiser defaults (fine.spec) as the trainer's config at this batch size."""
    return OptimConfig(lr=stage.lr, warmup=stage.warmup, ema=stage.ema, batch_size=batch_size)


def dense_optim(batch_size: int) -> OptimConfig:
    """The dense phase's optimiser (fine.spec.FINETUNE_OPTIM) at this batch size."""
    return stage_optim(FINETUNE_OPTIM, batch_size)


def build_descendant(ancestry: DiT, spec: JobSpec, target: ImageData | None = None) -> DiT:
    """Assemble the spec's descendant (on the target's image size, channels and classes when given)."""
    geometry = {} if target is None else {"image_size": target.image_size, "in_channels": target.channels,
                                          "num_classes": max(target.num_classes, 1)}
    return assemble(ancestry, spec.depth, spec.hidden_size, spec.method, seed=spec.seed, **geometry)


def train_descendant(
    model: DiT,
    subset: ImageData,
    spec: JobSpec,
    *,
    train_labels: bool = False,
    train_parts: tuple[str, ...] = (),
    hooks: Hooks | None = None,
    finetune_optim: OptimConfig | None = None,
    sigma_optim: OptimConfig | None = None,
    resume: DenseResume | None = None,
    timings: dict[str, float] | None = None,
) -> DiT:
    """The sigma stage (methods that have one) and dense fine-tuning; returns the trained model.

    `train_parts`: body parts that also train in the sigma stage (see `adaptation_parts`).
    `finetune_optim` replaces the dense phase's optimiser (default: `dense_optim`; with `ema` > 0 the
    phase returns its EMA weights), and
    `sigma_optim` the sigma stage's (default: fine.spec.SIGMA_OPTIM);
    `resume` skips what it saved and continues the dense phase exactly where it stopped.
    """
    hooks = hooks or Hooks()
    timings = timings if timings is not None else {}
    if resume is None:
        if hooks.after_init is not None:
            hooks.after_init(model)
        if spec.sigma_steps_run > 0:
            t = time.time()
            sigma_stage(model, subset, spec.sigma_steps, train_bias=spec.train_bias, train_labels=train_labels,
                        train_parts=train_parts, parts_lr_scale=ADAPT_LR_SCALE,
                        optim=sigma_optim or stage_optim(SIGMA_OPTIM, spec.batch_size),
                        seed=spec.seed, progress=hooks.step_fn(model), should_stop=hooks.should_stop)
            timings["sigma"] = time.time() - t
        if hooks.after_sigma is not None:
            hooks.after_sigma(model)
    if spec.finetune_steps > 0:
        t = time.time()
        if model.genes is not None:
            model = model.materialize()
        if resume is not None:
            model.load_state_dict(resume.model)
        optim = finetune_optim or dense_optim(spec.batch_size)
        ema = Ema(model, optim.ema) if optim.ema > 0 else None
        on_state = hooks.on_state
        # A checkpoint needs the raw weights as well as the training state (which holds the EMA).
        state_of = None if on_state is None else (
            lambda get: on_state(lambda: DenseResume(model.state_dict(), get())))
        train_all(model, subset, spec.finetune_steps, optim=optim, seed=spec.seed + 1, phase="finetune",
                  progress=hooks.step_fn(model if ema is None else ema.model), should_stop=hooks.should_stop,
                  resume=resume.train if resume is not None else None, on_state=state_of, ema=ema)
        if ema is not None:
            model.load_state_dict(ema.model.state_dict())
        timings["finetune"] = time.time() - t
    return model


@dataclass
class Trained:
    """A trained descendant, saved: the checkpoint can be registered before any evaluation."""

    model: DiT  # the dense model as saved (materialised), in eval mode: what evaluation samples from
    files: dict[str, Path]  # dense, config (and factored)
    config: dict  # config.json (no metrics yet)
    classes: list[int]  # the target's classes: the rows of the sample grid
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Evaluated:
    metrics: dict
    files: dict[str, Path]  # samples, metrics, config (config.json again, now with the metrics)
    config: dict
    timings: dict[str, float] = field(default_factory=dict)


def train_and_save(
    spec: JobSpec,
    learngene: LearngeneSet,
    train: ImageData,
    *,
    out_dir: Path | str,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Trained:
    """Assemble, train and save one descendant (model.safetensors + config.json, factored.safetensors when
    it stays factored); raises JobCanceled on cancel. `spec.dataset` names the data in the metadata."""
    errors = spec.errors()
    if errors:
        raise ValueError("; ".join(m for _, m in errors))
    dataset, lg = spec.dataset, learngene
    if len(train) == 0:
        raise DataError(f"{dataset}: no images left after the class filter")
    if train.image_size % lg.cfg.patch_size:
        raise DataError(f"{dataset}: image side {train.image_size} is not a multiple of the patch size {lg.cfg.patch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.time()
    model = build_descendant(lg.model, spec, train)
    timings["assemble"] = time.time() - t
    subset = train.subset(spec.subset_size, seed=spec.seed)
    retrain_labels = new_task(lg, train, dataset)
    parts = adaptation_parts(lg.cfg, train) if spec.sigma_steps_run > 0 else ()
    model = train_descendant(model, subset, spec, train_labels=retrain_labels, train_parts=parts,
                             hooks=Hooks(progress=progress, should_stop=should_stop), timings=timings)
    if should_stop is not None and should_stop():
        raise JobCanceled("canceled before saving")
    t = time.time()
    ran_sigma = spec.sigma_steps_run
    meta = {
        "dataset": dataset, "learngene_id": lg.id, "learngene_sha256": lg.sha256, "method": spec.method,
        "steps": {"sigma": ran_sigma, "finetune": spec.finetune_steps}, "subset_size": len(subset), "seed": spec.seed,
        "train_bias": spec.train_bias, "train_labels": retrain_labels and ran_sigma > 0,
        "trained_body_parts": list(parts),
    }
    dense = (model.materialize() if model.genes is not None else model).eval()
    config = save_dense(out, dense, meta)
    files = {"dense": out / "model.safetensors", "config": out / "config.json"}
    if model.genes is not None and spec.finetune_steps == 0:
        save_factored(out / "factored.safetensors", model, lg, meta)
        files["factored"] = out / "factored.safetensors"
    timings["save"] = time.time() - t
    return Trained(dense, files, config, sorted(train.labels.unique().tolist()), timings)


def evaluate_and_save(
    model: DiT,
    spec: JobSpec,
    test: ImageData,
    train: ImageData | None,
    config: dict,
    *,
    out_dir: Path | str,
    classes: list[int] | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    timings: dict[str, float] | None = None,
    precision: str = "fp32",
) -> Evaluated:
    """Evaluate a saved descendant (`config`: its config.json) and write samples.png, metrics.json and
    config.json with the metrics in it. The sample grid's rows (`classes`, default: the train split's) come
    from the evaluation's samples; only a class short of 8 samples is sampled again."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    model.eval()
    if spec.eval_images > 0:
        ev = run_evaluation(model, test, spec.dataset, n_images=spec.eval_images, sample_steps=spec.sample_steps,
                            seed=spec.seed, progress=progress, train=train, sampler=spec.sampler,
                            should_stop=should_stop, precision=precision)
    else:
        ev = Evaluation({})
    spent = {"eval": time.time() - t}
    t = time.time()
    if classes is None:
        classes = sorted(train.labels.unique().tolist()) if train is not None else list(range(model.cfg.num_classes))
    pool = (ev.images, ev.labels) if ev.images is not None and ev.labels is not None else None
    files = {"samples": sample_grid(model, out / "samples.png", steps=spec.sample_steps, seed=spec.seed,
                                    classes=classes, sampler=spec.sampler, cfg_scale=EVAL_CFG_SCALE, pool=pool,
                                    should_stop=should_stop)}
    spent["samples"] = time.time() - t
    config = {**config, "metrics": ev.metrics}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shown = {**(timings or {}), **spent}
    metrics_doc = {**ev.metrics, "timings_s": {k: round(v, 2) for k, v in shown.items()}}
    (out / "metrics.json").write_text(json.dumps(metrics_doc, indent=2, sort_keys=True) + "\n")
    files.update({"metrics": out / "metrics.json", "config": out / "config.json"})
    return Evaluated(ev.metrics, files, config, spent)


def init_descendant(
    spec: JobSpec,
    learngene_path: Path | str | None = None,
    *,
    out_dir: Path | str,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    learngene: LearngeneSet | None = None,
) -> InitResult:
    """Build, train, save and evaluate one descendant; raises JobCanceled on cancel.

    `spec.dataset` is what is loaded (a built-in name or a local .npz path); `learngene` saves
    loading `learngene_path` again.
    """
    if learngene is None and learngene_path is None:
        raise ValueError("init_descendant needs a learngene_path or a loaded learngene")
    errors = spec.errors()
    if errors:
        raise ValueError("; ".join(m for _, m in errors))
    t0 = time.time()
    lg = learngene or load_learngene(learngene_path)  # type: ignore[arg-type]
    train, test = load(spec.dataset, "train"), load(spec.dataset, "test")
    timings = {"load": time.time() - t0}
    trained = train_and_save(spec, lg, train, out_dir=out_dir, progress=progress, should_stop=should_stop)
    timings.update(trained.timings)
    if should_stop is not None and should_stop():
        raise JobCanceled("canceled before evaluation")
    done = evaluate_and_save(trained.model, spec, test, train, trained.config, out_dir=out_dir,
                             classes=trained.classes, progress=progress, should_stop=should_stop, timings=timings)
    timings.update(done.timings)
    timings["total"] = time.time() - t0
    return InitResult(files={**trained.files, **done.files}, metrics=done.metrics, config=done.config,
                      timings=timings)
