"""Resumable, width-aware pre-training of an ancestry (the source of a learngene set)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fine.assembly import assemble
from fine.config import DiTConfig
from fine.data import ImageData, batches
from fine.diffusion import Diffusion
from fine.formats import save_learngene
from fine.metrics import heldout_loss
from fine.model import DiT
from fine.spec import PretrainSpec, default_subnet_depths
from fine.training import Ema, JobCanceled, OptimConfig, ProgressFn, SubnetLoss, fit

_RECIPE = PretrainSpec.model_fields


@dataclass
class PretrainConfig:
    steps: int = 4000
    widths: list[int] = field(default_factory=list)  # trained prefix widths; [] = full width only
    widths_per_step: int | None = None  # extra random widths per step (None: all of them)
    # The recipe's defaults are the pre-training spec's (fine/spec.py, chosen by the recipe probes).
    sigma_init: str = _RECIPE["sigma_init"].default  # fine.spec.SIGMA_INITS
    sigma_lr_scale: float = _RECIPE["sigma_lr_scale"].default  # sigma's rate as a multiple of everything else's
    depths: list[int] | None = None  # depth-aware: other depths trained by sigma interpolation (None: the spec's rule)
    depths_per_step: int = 1  # how many of `depths` (each at a random offered width) each step trains
    eval_depths: list[int] = field(default_factory=list)  # depths whose assembled full-width held-out loss is logged
    ema_decay: float = 0.999
    seed: int = 0
    ckpt_every: int = 250
    eval_every: int = 250
    eval_images: int = 500
    eval_widths: list[int] | None = None  # widths whose held-out loss is logged (default: the trained ones)
    name: str = "learngene"


def heldout_by_width(model: DiT, test: ImageData, widths: list[int], n: int, seed: int = 0,
                     depths: list[int] = ()) -> dict[int | str, float]:
    """Held-out noise-prediction MSE of each prefix width (and `d<depth>`: each assembled depth at full
    width) on the same fixed (x0, t, noise) triples."""
    data = test.head(n)  # the first n, as the logs of every pre-training run so far
    out: dict[int | str, float] = {}
    for w in sorted(set(widths) | {model.cfg.hidden_size}):
        # A narrower width is evaluated as the sliced sub-network assembled at the same depth.
        net = model if w == model.cfg.hidden_size else assemble(model, model.cfg.depth, w, "fine")
        out[w] = heldout_loss(net, Diffusion(), data, n=len(data), seed=seed)
    for d in depths:
        if d != model.cfg.depth:
            out[f"d{d}"] = heldout_loss(assemble(model, d, model.cfg.hidden_size, "fine"), Diffusion(), data,
                                        n=len(data), seed=seed)
    return out


def pretrain(
    out_dir: str | Path,
    cfg: DiTConfig,
    train: ImageData,
    test: ImageData,
    pcfg: PretrainConfig,
    optim: OptimConfig | None = None,
    progress: ProgressFn | None = None,
    deadline: float | None = None,
) -> dict:
    """Train (or resume training) an ancestry; writes train_state.pt, train_log.jsonl, learngene/.

    Past `deadline` (epoch seconds) it checkpoints after the current step and returns: running it
    again continues from there (how a run longer than a session is carried across sessions).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    optim = optim or OptimConfig(lr=5e-4, warmup=200)
    torch.manual_seed(pcfg.seed)
    model = DiT(cfg)
    model.initialize_weights(torch.Generator().manual_seed(pcfg.seed), sigma_init=pcfg.sigma_init)
    ema = Ema(model, pcfg.ema_decay)
    sigma_ids = {id(p) for p in model.sigma_parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in sigma_ids]},
              {"params": model.sigma_parameters(), "lr_scale": pcfg.sigma_lr_scale}]
    opt = torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)
    state_path = out / "train_state.pt"
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    widths = [w for w in pcfg.widths if w != cfg.hidden_size]
    subnet_depths = default_subnet_depths(cfg.depth) if pcfg.depths is None else pcfg.depths
    wloss = SubnetLoss(model, widths, pcfg.widths_per_step, seed=pcfg.seed + start,
                       depths=subnet_depths, depths_per_step=pcfg.depths_per_step)
    # Re-seeding by the start step keeps a resumed run reproducible without storing RNG streams.
    stream = batches(train, optim.batch_size, pcfg.seed + start)
    g = torch.Generator().manual_seed(pcfg.seed + 7919 * (start + 1))
    log = open(out / "train_log.jsonl", "a")
    t0 = time.time()
    parts_last: dict[int, float] = {}

    def loss_fn(_step: int) -> torch.Tensor:
        nonlocal parts_last
        x, y = next(stream)
        loss, parts_last = wloss(x, y, g)
        return loss

    def checkpoint(step: int) -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "ema": ema.model.state_dict(), "opt": opt.state_dict(),
                    "step": step, "pretrain": asdict(pcfg), "config": cfg.to_dict()}, tmp)
        os.replace(tmp, state_path)
        save_learngene(out / "learngene", ema.model, {
            "name": pcfg.name, "source_dataset": train.name, "steps": step,
            "widths": sorted(set(pcfg.widths) | {cfg.hidden_size}), "ema_decay": pcfg.ema_decay,
            "batch_size": optim.batch_size, "lr": optim.lr, "seed": pcfg.seed,
            "recipe": {"sigma_init": pcfg.sigma_init, "sigma_lr_scale": pcfg.sigma_lr_scale, "depths": subnet_depths,
                       "depths_per_step": pcfg.depths_per_step, "schedule": optim.schedule, "warmup": optim.warmup,
                       "total_steps": pcfg.steps},
        })

    def after_step(step: int, value: float) -> None:
        ema.update(model, step)
        record: dict = {"step": step, "loss": value, "parts": parts_last, "elapsed": round(time.time() - t0, 2)}
        if step % pcfg.eval_every == 0 or step == pcfg.steps:
            widths = pcfg.eval_widths if pcfg.eval_widths is not None else pcfg.widths
            record["heldout_ema"] = heldout_by_width(ema.model, test, widths, pcfg.eval_images, depths=pcfg.eval_depths)
        log.write(json.dumps(record) + "\n")
        log.flush()
        paused[0] = deadline is not None and time.time() > deadline
        if step % pcfg.ckpt_every == 0 or step == pcfg.steps or paused[0]:
            checkpoint(step)

    paused = [False]  # set (with the state saved) by the first step that ends past the deadline
    try:
        fit(model.parameters(), loss_fn, pcfg.steps, optim, "pretrain", progress,
            should_stop=lambda: paused[0], optimizer=opt, start_step=start, after_step=after_step)
    except JobCanceled:
        if not paused[0]:  # a cancel from `progress`, not the deadline pause: the caller's to handle
            log.close()
            raise
        # paused at the deadline, state saved by the last after_step
    log.close()
    if start >= pcfg.steps:
        checkpoint(start)
    return json.loads((out / "learngene" / "config.json").read_text())
