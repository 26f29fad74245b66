"""What a job asks for: the job and pre-training specs, their defaults, limits and methods.

Torch-free (standard library and pydantic only): the API, its validation, the worker, the pipeline,
the CLI and the benchmarks all derive their fields, defaults and limits from here. Limits are
published in the JSON schema (`minimum` / `maximum`) and checked by `limit_errors`, so that one
request gets every error at once, phrased by whoever shows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

# `linear-fit` puts sigma and biases on the least-squares line over depth through the learngene's layers:
# TLEG's assembly, and TLEG itself only on a learngene pre-trained with layer_form=linear (on a FINE
# learngene it is a line fitted through free layers). It was called `tleg` until that was measured.
METHODS: tuple[str, ...] = ("fine", "scratch", "weight-selection", "linear-fit")
RENAMED_METHODS: dict[str, str] = {"tleg": "linear-fit"}
SAMPLERS: tuple[str, ...] = ("ddim", "ddpm", "dpm++2m")  # fine.diffusion.Diffusion.sample
# Evaluation and sample grids: DPM-Solver++ (2M) at 15 steps held DDIM-50's FD-FMNIST within its seed
# spread at 15 instead of 50 model calls (bench/results/sampler/table.md).
EVAL_SAMPLER, EVAL_SAMPLE_STEPS = "dpm++2m", 15
# Precision of the evaluation's sampling (fine.pipeline.resolve_precision; `auto` = bf16 where the CPU has AMX).
# fp32 by default: bf16 autocast sampled 1.4-1.6x faster on AMX but read FD 1.6-2.1 higher on the same start
# noise, every time (bench/results/sampler/table.md), and a job's FD should not depend on the machine.
SAMPLE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")
SIGMA_METHODS: tuple[str, ...] = ("fine",)  # only these have a sigma stage, so only these take sigma_steps
MAX_SEED = 2**31 - 1

JOB_LIMITS: dict[str, tuple[int, int]] = {
    "depth": (1, 64),
    "sigma_steps": (0, 20_000),
    "subset_size": (8, 100_000),
    "finetune_steps": (0, 50_000),
    "seed": (0, MAX_SEED),
    "batch_size": (1, 1024),
    "eval_images": (0, 10_000),
    "sample_steps": (1, 1000),
}
PRETRAIN_LIMITS: dict[str, tuple[int, int]] = {
    "depth": (1, 64),
    "head_dim": (8, 256),
    "steps": (1, 200_000),
    "batch_size": (1, 1024),
    "seed": (0, MAX_SEED),
    "eval_images": (8, 10_000),
}
MAX_PRETRAIN_WIDTH = 1024
# How an ancestry's per-layer sigma starts: `random` draws it per layer (the first learngene's
# recipe: layers start as unrelated random codes that training never undid), `equal` gives every
# layer the same positive sigma (1 % noise), so layers differ only by what they learn.
SIGMA_INITS: tuple[str, ...] = ("random", "equal")
SCHEDULES: tuple[str, ...] = ("constant", "cosine")  # the rate after warm-up
# How an ancestry's per-layer tensors (sigma, biases) relate across depth: `free` (FINE), or `linear`
# (TLEG: theta_l = theta_A + (l / L) theta_B, the ancestry on which `linear-fit` is TLEG).
LAYER_FORMS: tuple[str, ...] = ("free", "linear")
SUBNET_DEPTH_FACTOR = 1.5  # depth-aware pre-training trains every depth from 1 to this x the ancestry's


def default_subnet_depths(depth: int) -> list[int]:
    """Depths a depth-aware ancestry trains besides its own: 1 .. 1.5x its depth (deeper descendants too:
    a depth-6 probe's depth-12 descendant had held-out 0.238 at assembly untrained, 0.089 trained)."""
    return [d for d in range(1, int(SUBNET_DEPTH_FACTOR * depth) + 1) if d != depth]
MAX_CLASSES = 1000  # of a dataset (labels 0..MAX_CLASSES-1), and of a class filter's range
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
MAX_DATASET_NAME = 256  # the registry's column widths: longer strings are a 422, never a database error
MAX_LEARNGENE_ID = 128
MAX_LIST = 64  # widths, depths
# Webhooks (Replicate's conventions): POST the job to `webhook` on these events of its life.
# start: a worker began running it (again, after a re-queue); completed: it reached a final status.
WEBHOOK_EVENTS: tuple[str, ...] = ("start", "completed")
MAX_WEBHOOK_URL = 2048
WEBHOOK_SCHEMES: tuple[str, ...] = ("http", "https")
# Every learngene set shipped in the checkout, by its version alias (paths relative to the checkout): the
# service registers them all (public; older versions stay) and points `default` at DEFAULT_LEARNGENE's.
SHIPPED_LEARNGENES: dict[str, Path] = {
    "fmnist-v1": Path("learngenes/default/learngene.safetensors"),  # 2,750 steps, sigma random (the first default)
    "fmnist-v2": Path("learngenes/fmnist-v2/learngene/learngene.safetensors"),  # 20,000 steps, issue 15's recipe
    "cfmnist-v1": Path("learngenes/cfmnist-v1/learngene/learngene.safetensors"),  # 32x32 RGB, the same recipe
}
DEFAULT_LEARNGENE = SHIPPED_LEARNGENES["fmnist-v2"]  # the `default` alias of a fresh registry


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one line a person can act on."""


def parse_dataset_name(name: str) -> tuple[str, list[int] | None]:
    """'fashion-mnist:5-9' -> ('fashion-mnist', [5, 6, 7, 8, 9])."""
    base, _, spec = name.partition(":")
    if not spec:
        return base, None
    classes: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            a, b = int(lo), int(hi or lo)
            if b < a or b - a > MAX_CLASSES:
                raise ValueError
            classes.extend(range(a, b + 1))
    except ValueError:
        raise DatasetError(f"bad class filter {spec!r} in {name!r}: use e.g. ':5-9' or ':0,2,4'") from None
    return base, sorted(set(classes))


def default_learngene(path: Path | str = DEFAULT_LEARNGENE) -> Path:
    """A learngene path as given if absolute or present here, else in the source checkout (the shipped set by default)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    in_checkout = Path(__file__).resolve().parent.parent / path
    return in_checkout if in_checkout.exists() else path


@dataclass(frozen=True)
class StageOptim:
    """Optimiser defaults of one training stage (AdamW; linear warm-up, then a constant rate)."""

    lr: float
    warmup: int
    ema: float = 0.0  # > 0: the stage returns an EMA of its weights with this decay (fine.training.Ema); 0: raw


# A target with other channels or another image size than its learngene also trains these parts of
# the shared body in the sigma stage, at ADAPT_LR_SCALE x the sigma rate (U, V stay frozen).
ADAPT_PARTS: tuple[str, ...] = ("x_embedder", "final_layer")
ADAPT_LR_SCALE = 1.0

SIGMA_OPTIM = StageOptim(lr=3e-3, warmup=20)  # sigma stage: sigma's scale is small, so a higher rate
# Dense fine-tuning (and a scratch run's training), the same rule for every method. The EMA keeps a
# transferred init's head start: the raw weights of a fresh AdamW leave it (FINE d6 w128: 0.0396 ->
# 0.0431 after 250 steps), the average does not (0.0403), and scratch gains from it too
# (bench/results/finetune_ema).
FINETUNE_OPTIM = StageOptim(lr=1e-3, warmup=50, ema=0.999)


def _limited(limits: dict[str, tuple[int, int]], name: str, default: Any, description: str) -> Any:
    """A field whose range shows in the JSON schema (checked by `limit_errors`, not by pydantic)."""
    lo, hi = limits[name]
    return Field(default=default, description=description, json_schema_extra={"minimum": lo, "maximum": hi})


def limit_errors(values: BaseModel, limits: dict[str, tuple[int, int]]) -> list[tuple[str, str]]:
    """(field, message) for every value outside its limits."""
    errors = []
    for name, (lo, hi) in limits.items():
        value = getattr(values, name)
        if not lo <= value <= hi:
            errors.append((name, f"{name} must be between {lo} and {hi}, got {value}"))
    return errors


def webhook_url_error(url: str) -> str | None:
    """Why `url` cannot be a webhook (None if it can): http or https, a host, no credentials in it.
    Which hosts a server calls is its own policy on top of this (dispatch/webhooks.py)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"webhook must be an http(s) URL, got {url[:80]!r} ({e})"
    if parts.scheme.lower() not in WEBHOOK_SCHEMES or not parts.hostname:
        return f"webhook must be an http:// or https:// URL with a host, got {url[:80]!r}"
    if parts.username is not None or parts.password is not None:
        return "webhook must not carry credentials (user:password@): verify the signature instead"
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return f"webhook must be a URL without spaces or control characters, got {url[:80]!r}"
    if port == 0:
        return f"webhook port must be in 1-65535, got {url[:80]!r}"
    return None


def webhook_errors(url: str | None, events: list[str] | None) -> list[tuple[str, str]]:
    """(field, message) for a bad webhook URL or events filter."""
    errors = []
    if url is not None and (why := webhook_url_error(url)):
        errors.append(("webhook", why))
    if events is not None:
        bad = [e for e in events if e not in WEBHOOK_EVENTS]
        if bad or not events:
            errors.append(("webhook_events_filter", f"webhook_events_filter must be a non-empty list of "
                                                    f"{', '.join(WEBHOOK_EVENTS)}, got {events}"))
        if url is None:
            errors.append(("webhook_events_filter", "webhook_events_filter needs a webhook URL"))
    return errors


def width_fits(hidden_size: int, head_dim: int, max_width: int) -> bool:
    """A width is whole heads of the learngene's head size, at most the learngene's width."""
    return head_dim <= hidden_size <= max_width and hidden_size % head_dim == 0


class JobSpec(BaseModel):
    """What to build. Ranges are checked against the chosen learngene (see POST /v1/jobs)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    depth: int = _limited(JOB_LIMITS, "depth", ..., "number of transformer blocks, 1..64")
    hidden_size: int = Field(description="width; a multiple of the learngene's head size, at most its width")
    num_heads: int | None = Field(default=None, description="optional; must equal hidden_size / head size")
    dataset: str = Field(description="fashion-mnist, mnist-5k, digits or an uploaded dataset id; "
                                     "optional class filter e.g. fashion-mnist:5-9", max_length=MAX_DATASET_NAME)
    learngene: str | None = Field(default=None, max_length=MAX_LEARNGENE_ID,
                                  description="learngene id or alias; default: the `default` alias")
    method: str = Field(default="fine", description=" | ".join(METHODS),
                        json_schema_extra={"enum": list(METHODS)})
    # 125: the fewest that hold 1 % of a 300-step sigma stage at every size on fmnist-v2 (bench/results/sigma_tune/)
    sigma_steps: int = _limited(JOB_LIMITS, "sigma_steps", 125, "sigma-stage steps, 0..20000")
    subset_size: int = _limited(JOB_LIMITS, "subset_size", 5000, "training images drawn from the dataset, 8..100000")
    finetune_steps: int = _limited(JOB_LIMITS, "finetune_steps", 0,
                                   "dense fine-tuning steps after the sigma stage, 0..50000 "
                                   "(the checkpoint holds the EMA of the dense weights)")
    seed: int = _limited(JOB_LIMITS, "seed", 0, "random seed of assembly, data order and noise")
    train_bias: bool = True
    batch_size: int = _limited(JOB_LIMITS, "batch_size", 64, "1..1024")
    eval_images: int = _limited(JOB_LIMITS, "eval_images", 500, "images for held-out loss and FD, 0..10000 (0: skip)")
    sample_steps: int = _limited(JOB_LIMITS, "sample_steps", EVAL_SAMPLE_STEPS,
                                 "sampler steps for evaluation and the sample grid, 1..1000")
    sampler: str = Field(default=EVAL_SAMPLER, description="sampler for evaluation and the sample grid: "
                         + " | ".join(SAMPLERS), json_schema_extra={"enum": list(SAMPLERS)})
    webhook: str | None = Field(default=None, max_length=MAX_WEBHOOK_URL,
                                description="optional http(s) URL the job is POSTed to (signed, Standard Webhooks) "
                                            "on the events of webhook_events_filter")
    webhook_events_filter: list[Annotated[str, Field(json_schema_extra={"enum": list(WEBHOOK_EVENTS)})]] | None = Field(
        default=None, max_length=len(WEBHOOK_EVENTS),
        description="events that call the webhook: " + ", ".join(WEBHOOK_EVENTS) + " (default: all)")

    @property
    def has_sigma_stage(self) -> bool:
        """Does this method train sigma (the others ignore sigma_steps)?"""
        return self.method in SIGMA_METHODS

    @property
    def sigma_steps_run(self) -> int:
        """Sigma-stage steps that actually run: none for a method without a sigma stage."""
        return self.sigma_steps if self.has_sigma_stage else 0

    def errors(self) -> list[tuple[str, str]]:
        """(field, message) for every limit broken and an unknown method (no learngene needed)."""
        errors = limit_errors(self, JOB_LIMITS)
        if self.method in RENAMED_METHODS:
            errors.append(("method", f"method {self.method!r} is now {RENAMED_METHODS[self.method]!r} (a least-squares "
                                     "line through the learngene's layers; TLEG only on a layer_form=linear learngene)"))
        elif self.method not in METHODS:
            errors.append(("method", f"method must be one of {', '.join(METHODS)}, got {self.method!r}"))
        if self.sampler not in SAMPLERS:
            errors.append(("sampler", f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}"))
        return errors + webhook_errors(self.webhook, self.webhook_events_filter)

    def learngene_errors(self, head_dim: int, width: int, name: str) -> list[tuple[str, str]]:
        """(field, message) where the spec does not fit the learngene `name` (its head size and width)."""
        hs, hd = self.hidden_size, head_dim
        if not width_fits(hs, hd, width):
            return [("hidden_size", f"hidden_size must be a multiple of {hd} and at most {width} "
                                    f"for learngene {name}, got {hs}")]
        if self.num_heads is not None and self.num_heads != hs // hd:
            return [("num_heads", f"num_heads must be hidden_size / head size = {hs} / {hd} = {hs // hd} "
                                  f"for learngene {name}, got {self.num_heads}")]
        return []

    def warnings(self) -> list[str]:
        """What the spec asks for that will be ignored."""
        if not self.has_sigma_stage and self.sigma_steps > 0:
            return [f"method {self.method} has no sigma stage: sigma_steps={self.sigma_steps} is ignored "
                    "(only finetune_steps train)"]
        return []


class PretrainSpec(BaseModel):
    """A pre-training job: trains an ancestry and registers its learngene set (POST /v1/learngenes)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str = Field(description="source dataset (built-in or uploaded id, optional class filter)",
                         max_length=MAX_DATASET_NAME)
    depth: int = _limited(PRETRAIN_LIMITS, "depth", 8, "ancestry blocks, 1..64")
    hidden_size: int = Field(default=128, description="ancestry width, a multiple of head_dim, at most 1024",
                             json_schema_extra={"maximum": MAX_PRETRAIN_WIDTH})
    head_dim: int = _limited(PRETRAIN_LIMITS, "head_dim", 32, "attention head size, 8..256")
    rank: int = Field(default=128, description="learngene rank r, 1..hidden_size", json_schema_extra={"minimum": 1})
    patch_size: int = Field(default=4, description="must divide the dataset's image side")
    steps: int = _limited(PRETRAIN_LIMITS, "steps", 4000, "training steps, 1..200000")
    widths: list[int] = Field(default_factory=list, max_length=MAX_LIST,
                              description="extra trained prefix widths (width-aware)")
    batch_size: int = _limited(PRETRAIN_LIMITS, "batch_size", 64, "1..1024")
    lr: float = Field(default=1e-3, description="learning rate, (0, 1]",
                      json_schema_extra={"exclusiveMinimum": 0, "maximum": 1})
    warmup: int = Field(default=200, description="linear warm-up steps, 0..steps", json_schema_extra={"minimum": 0})
    ema_decay: float = Field(default=0.999, description="0 <= ema_decay < 1",
                             json_schema_extra={"minimum": 0, "exclusiveMaximum": 1})
    seed: int = _limited(PRETRAIN_LIMITS, "seed", 0, "random seed")
    eval_images: int = _limited(PRETRAIN_LIMITS, "eval_images", 500, "held-out images per evaluation, 8..10000")
    # The recipe chosen by bench/results/recipe_probe (issue 15): sigma starts equal in every layer,
    # learns at 10x the rate, and every step also trains one other depth by sigma interpolation.
    sigma_init: str = Field(default="equal", description="random | equal", json_schema_extra={"enum": list(SIGMA_INITS)})
    sigma_lr_scale: float = Field(default=10.0, description="sigma's rate as a multiple of lr, (0, 100]",
                                  json_schema_extra={"exclusiveMinimum": 0, "maximum": 100})
    depths: list[int] | None = Field(default=None, max_length=MAX_LIST, description="depth-aware: other depths trained by sigma "
                                     "interpolation; null: 1 .. 1.5 x depth; []: off")
    schedule: str = Field(default="cosine", description="constant | cosine", json_schema_extra={"enum": list(SCHEDULES)})
    layer_form: str = Field(default="free", description="free (FINE) | linear (a TLEG ancestry)",
                            json_schema_extra={"enum": list(LAYER_FORMS)})
    name: str = Field(default="learngene", description="id prefix: lowercase letters, digits, dashes",
                      json_schema_extra={"pattern": NAME_PATTERN.pattern, "maxLength": 40})

    def errors(self) -> list[tuple[str, str]]:
        """(field, message) for every rule broken that needs no dataset."""
        errors = limit_errors(self, PRETRAIN_LIMITS)
        hs, hd = self.hidden_size, self.head_dim
        if hd > 0 and not width_fits(hs, hd, MAX_PRETRAIN_WIDTH):
            errors.append(("hidden_size", f"hidden_size must be a multiple of head_dim {hd} and at most "
                                          f"{MAX_PRETRAIN_WIDTH}, got {hs}"))
        if not 1 <= self.rank <= max(1, hs):
            errors.append(("rank", f"rank must be between 1 and hidden_size {hs}, got {self.rank}"))
        bad_widths = [w for w in self.widths if hd <= 0 or not width_fits(w, hd, hs)]
        if bad_widths:
            errors.append(("widths", f"widths must be multiples of head_dim {hd} up to hidden_size {hs}, got "
                                     f"{bad_widths}"))
        if not 0 < self.lr <= 1:
            errors.append(("lr", f"lr must be in (0, 1], got {self.lr}"))
        if not 0 <= self.warmup <= self.steps:
            errors.append(("warmup", f"warmup must be between 0 and steps ({self.steps}), got {self.warmup}"))
        if not 0 <= self.ema_decay < 1:
            errors.append(("ema_decay", f"ema_decay must be in [0, 1), got {self.ema_decay}"))
        if not NAME_PATTERN.match(self.name):
            errors.append(("name", f"name must be 1-40 lowercase letters, digits or dashes, got {self.name!r}"))
        if self.sigma_init not in SIGMA_INITS:
            errors.append(("sigma_init", f"sigma_init must be one of {', '.join(SIGMA_INITS)}, got {self.sigma_init!r}"))
        if self.schedule not in SCHEDULES:
            errors.append(("schedule", f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"))
        if self.layer_form not in LAYER_FORMS:
            errors.append(("layer_form", f"layer_form must be one of {', '.join(LAYER_FORMS)}, got {self.layer_form!r}"))
        if not 0 < self.sigma_lr_scale <= 100:
            errors.append(("sigma_lr_scale", f"sigma_lr_scale must be in (0, 100], got {self.sigma_lr_scale}"))
        max_depth = PRETRAIN_LIMITS["depth"][1]
        if self.depths is not None and any(not 1 <= d <= max_depth for d in self.depths):
            errors.append(("depths", f"depths must be between 1 and {max_depth}, got {self.depths}"))
        return errors

    @property
    def subnet_depths(self) -> list[int]:
        """The other depths this run trains (the default rule when `depths` is null)."""
        return default_subnet_depths(self.depth) if self.depths is None else sorted(set(self.depths) - {self.depth})
