"""Training loops: ancestry pre-training (width-aware), the sigma stage, dense fine-tuning.

All loops share `fit`, which reports progress through a callback and stops cooperatively when
`should_stop` says so: the service plugs its registry updates and cancel flag into these.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from fine.assembly import respread_layers
from fine.config import DiTConfig
from fine.data import ImageData, batches
from fine.diffusion import Diffusion
from fine.model import DiT
from fine.spec import SCHEDULES
from fine.width import slice_state

ProgressFn = Callable[[str, int, int, float | None], None]  # (phase, step, total, loss)
StopFn = Callable[[], bool]


class JobCanceled(Exception):
    """Raised inside a training loop when `should_stop` returned True."""


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 50  # linear warm-up steps
    grad_clip: float = 1.0
    batch_size: int = 64
    schedule: str = "constant"  # after warm-up: constant, or cosine decay to final_lr_frac * lr at the last step
    final_lr_frac: float = 0.0
    ema: float = 0.0  # train_all: > 0 returns an EMA of the weights with this decay (Ema, with warm-up); 0: raw

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")

    def factor(self, step: int, steps: int) -> float:
        """The rate at 0-based `step` of a `steps`-step run, as a fraction of `lr`."""
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        if self.schedule == "constant" or step < self.warmup:
            return warm
        progress = min(1.0, (step - self.warmup) / max(1, steps - 1 - self.warmup))
        return self.final_lr_frac + (1 - self.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))


def fit(
    params: Iterable[nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    optim: OptimConfig,
    phase: str = "train",
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    after_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run `steps` AdamW steps on `params`; returns the per-step losses.

    A parameter group's optional `lr_scale` multiplies the scheduled rate (e.g. sigma's own rate).
    """
    params = [p for p in params if p.requires_grad]
    opt = optimizer or torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    losses: list[float] = []
    for step in range(start_step, steps):
        if should_stop is not None and should_stop():
            raise JobCanceled(f"{phase} canceled at step {step}/{steps}")
        for group in opt.param_groups:
            group["lr"] = optim.lr * group.get("lr_scale", 1.0) * optim.factor(step, steps)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
        opt.step()
        value = loss.item()
        losses.append(value)
        if after_step is not None:
            after_step(step + 1, value)
        if progress is not None:
            progress(phase, step + 1, steps, value)
    return losses


class DiffusionLoss:
    """The diffusion loss on an endless shuffled batch stream.

    Its position and random state can be saved and restored, so a resumed run draws exactly the
    batches, noise and label drops the uninterrupted run would have drawn.
    """

    def __init__(self, model: nn.Module, data: ImageData, batch_size: int, seed: int,
                 diffusion: Diffusion | None = None):
        self.model, self.data, self.batch_size, self.seed = model, data, batch_size, seed
        self.diffusion = diffusion or Diffusion()
        self.g = torch.Generator().manual_seed(seed + 1)
        self.drawn = 0
        self.stream: Iterator = batches(data, batch_size, seed)
        self.device = next(model.parameters()).device

    def __call__(self, _step: int) -> torch.Tensor:
        x, y = next(self.stream)
        self.drawn += 1
        return self.diffusion.loss(self.model, x.to(self.device), y.to(self.device), generator=self.g)

    def state_dict(self) -> dict:
        # The global RNG is part of the state: the label embedder's class dropout draws from it.
        return {"drawn": self.drawn, "noise": self.g.get_state(), "global": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.drawn = state["drawn"]
        self.stream = batches(self.data, self.batch_size, self.seed, start=self.drawn)
        self.g.set_state(state["noise"])
        torch.set_rng_state(state["global"])


# -- the stages of a descendant ------------------------------------------------------------------
# Parts of the shared body that may train in the sigma stage (U and V never do: the descendant stays
# factored). A target with other channels or another image size cannot adapt without its
# input/output layers (DESIGN.md: 0.68 held-out frozen vs 0.031 with them, colour digits).
BODY_PARTS = ("x_embedder", "final_layer", "t_embedder", "y_embedder")


def sigma_stage(
    model: DiT,
    data: ImageData,
    steps: int,
    *,
    train_bias: bool = True,
    train_labels: bool = False,
    train_parts: tuple[str, ...] = (),
    parts_lr_scale: float = 1.0,
    optim: OptimConfig | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> list[float]:
    """Train only sigma (and block biases; the label table for a new task; the body `train_parts`, at
    `parts_lr_scale` times the rate); U, V and everything else stay frozen."""
    if model.genes is None:
        raise ValueError("the sigma stage needs a learngene-backed (factored) model")
    unknown = set(train_parts) - set(BODY_PARTS)
    if unknown:
        raise ValueError(f"unknown body parts {sorted(unknown)}: use some of {', '.join(BODY_PARTS)}")
    optim = optim or OptimConfig(lr=3e-3, warmup=20)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = model.sigma_parameters()
    if train_bias:
        trainable += model.block_bias_parameters()
    if train_labels and "y_embedder" not in train_parts:
        trainable.append(model.y_embedder.embedding_table.weight)
    body = [p for part in train_parts for p in getattr(model, part).parameters()]
    for p in trainable + body:
        p.requires_grad_(True)
    groups = [{"params": trainable}] + ([{"params": body, "lr_scale": parts_lr_scale}] if body else [])
    opt = torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)
    model.train()
    loss_fn = DiffusionLoss(model, data, optim.batch_size, seed)
    try:
        return fit(trainable + body, loss_fn, steps, optim, "sigma", progress, should_stop, optimizer=opt)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


@dataclass
class TrainState:
    """Where a dense training run stands: enough to continue it exactly (`train_all(resume=...)`)."""

    step: int
    optimizer: dict
    loss: dict  # DiffusionLoss.state_dict()
    ema: dict | None = None  # the averaged weights, when the run keeps an EMA


def train_all(
    model: DiT,
    data: ImageData,
    steps: int,
    *,
    optim: OptimConfig | None = None,
    seed: int = 0,
    phase: str = "finetune",
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    resume: TrainState | None = None,
    on_state: Callable[[Callable[[], TrainState]], None] | None = None,
    ema: Ema | None = None,
) -> list[float]:
    """Train every parameter (dense fine-tuning, or training a `scratch` model).

    `ema` (built on `model` before the first step) is updated after every step; the caller decides
    which weights it keeps. `resume` continues from a saved state (the model's weights are the
    caller's to restore; the EMA's are restored here); `on_state` receives a getter of the current
    state before the run starts, for checkpointing.
    """
    optim = optim or OptimConfig(lr=1e-3, warmup=50)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    loss_fn = DiffusionLoss(model, data, optim.batch_size, seed)
    start = 0
    if resume is not None:
        opt.load_state_dict(resume.optimizer)
        loss_fn.load_state_dict(resume.loss)
        start = resume.step
        if ema is not None:
            if resume.ema is None:
                raise ValueError("this run keeps an EMA but the state it resumes from has none")
            ema.model.load_state_dict(resume.ema)
    if on_state is not None:
        on_state(lambda: TrainState(loss_fn.drawn, opt.state_dict(), loss_fn.state_dict(),
                                    None if ema is None else ema.model.state_dict()))
    after = None if ema is None else (lambda step, _loss: ema.update(model, step))
    return fit(params, loss_fn, steps, optim, phase, progress, should_stop, optimizer=opt, start_step=start,
               after_step=after)


# -- ancestry pre-training -----------------------------------------------------------------------
class SubnetLoss:
    """Sandwich rule over widths, plus random shallower depths: the sub-networks an ancestry trains.

    Every step trains the full model, the narrowest width and (up to `per_step`) the other widths
    at full depth; then `depths_per_step` draws of a depth from `depths` at a random offered width.
    Narrower widths are prefix sub-networks (`fine.width.slice_state`) and other depths are built by
    the sigma interpolation descendants use (`fine.assembly.respread_layers`), both on live
    tensors, so every gradient lands in the shared weights.
    """

    def __init__(self, model: DiT, widths: list[int], per_step: int | None = None, seed: int = 0,
                 depths: list[int] | None = None, depths_per_step: int = 1):
        self.model = model
        self.full = model.cfg.hidden_size
        self.widths = sorted(set(widths) - {self.full})
        self.depths = sorted(set(depths or []) - {model.cfg.depth})
        if any(d < 1 for d in self.depths):
            raise ValueError(f"depths must be >= 1, got {self.depths}")
        self.per_step = per_step
        self.depths_per_step = depths_per_step
        self.rng = random.Random(seed)
        self.subnets = {w: DiT(model.cfg.replace(hidden_size=w)) for w in self.widths}
        self.deep_subnets: dict[tuple[int, int], DiT] = {}
        self.diffusion = Diffusion()

    def draw(self) -> list[int]:
        if not self.widths:
            return []
        narrowest, others = self.widths[0], self.widths[1:]
        if self.per_step is not None and len(others) > self.per_step:
            others = self.rng.sample(others, self.per_step)
        return [narrowest, *others]

    def draw_depths(self) -> list[tuple[int, int]]:
        if not self.depths:
            return []
        return [(self.rng.choice(self.depths), self.rng.choice([*self.widths, self.full]))
                for _ in range(self.depths_per_step)]

    def _subnet(self, depth: int, width: int) -> DiT:
        if (depth, width) not in self.deep_subnets:
            self.deep_subnets[depth, width] = DiT(self.model.cfg.replace(depth=depth, hidden_size=width))
        return self.deep_subnets[depth, width]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.diffusion.loss(self.model, x, y, generator=g)
        parts: dict = {self.full: loss.item()}
        params = dict(self.model.named_parameters())
        cfg = self.model.cfg
        subs = [(cfg.depth, w, self.subnets[w]) for w in self.draw()]
        subs += [(d, w, self._subnet(d, w)) for d, w in self.draw_depths()]
        for depth, w, sub in subs:
            sub.train(self.model.training)
            state = params if depth == cfg.depth else respread_layers(params, depth)
            sliced = slice_state(state, cfg.replace(depth=depth), w)
            part = self.diffusion.loss(lambda *a, s=sub, p=sliced: functional_call(s, p, a), x, y, generator=g)
            # Full-depth widths keep their plain keys (as every log so far); other depths say both.
            parts[w if depth == cfg.depth else f"d{depth}w{w}"] = part.item()
            loss = loss + part
        return loss, parts


class Ema:
    """Exponential moving average of a model's parameters, with the usual warm-up of the decay.

    `warmup=False` keeps the decay constant from the first update, so the average leaves its start slowly
    (for a transferred init the start is the point worth keeping).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - d)


def default_widths(cfg: DiTConfig, narrowest: int = 64) -> list[int]:
    """Every multiple of the head size from `narrowest` up to the full width."""
    lo = max(cfg.head_dim, narrowest)
    return list(range(lo, cfg.hidden_size + 1, cfg.head_dim))
