"""Shared harness: train one descendant (any method) and record its curve and quality.

One run = (method, depth, width, seed, dataset). Each finished run is appended as one JSON line
to `<out>/runs.jsonl`; a run already there is skipped, so a long benchmark can be interrupted,
resumed, or split across processes (`--shard i/n`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from fine.assembly import truncate_rank
from fine.data import ImageData
from fine.diffusion import Diffusion
from fine.formats import LearngeneSet
from fine.metrics import floor, heldout_loss, load_feature_classifier, named, sample_quality
from fine.pipeline import (
    DenseResume,
    Hooks,
    adaptation_parts,
    build_descendant,
    dense_optim,
    new_task,
    sample_grid,
    train_descendant,
)
from fine.spec import JobSpec
from fine.training import OptimConfig, TrainState


@dataclass(frozen=True)
class Run:
    method: str
    depth: int
    width: int
    seed: int = 0
    dataset: str = "fashion-mnist"
    sigma_steps: int = 300  # fine only
    full_steps: int = 500  # dense steps after the sigma stage (scratch: its whole budget)
    fd_at: tuple[int, ...] = ()  # full-step counts at which FD is measured (0 = right after init/sigma)
    train_bias: bool = True
    sigma_init: str = "interp"  # fine only: interp (= trained) | random | constant | linear
    learngene: str = ""
    rank: int = 0  # fine only: 0 = the learngene's rank, else its top-`rank` components (fine.assembly.truncate_rank)
    # The dense phase's EMA decay: every run before the service's rule kept one (fine.spec.FINETUNE_OPTIM)
    # measured the raw weights, so 0 (raw) stays the default and a profile under the rule names its decay.
    ema: float = 0.0

    def spec(self, ecfg: EvalConfig) -> JobSpec:
        """The job spec this run trains (fine.pipeline's; the benchmark measures instead of evaluating)."""
        return JobSpec(depth=self.depth, hidden_size=self.width, dataset=self.dataset, method=self.method,
                       sigma_steps=self.sigma_steps, subset_size=ecfg.subset, finetune_steps=self.full_steps,
                       seed=self.seed, train_bias=self.train_bias, batch_size=ecfg.batch_size)

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_record(cls, rec: dict) -> Run:
        """The run a runs.jsonl record was made by (JSON turned fd_at into a list)."""
        return cls(**{k: (tuple(v) if k == "fd_at" else v) for k, v in rec.items() if k in cls.__dataclass_fields__})


@dataclass
class EvalConfig:
    subset: int = 5000  # training images of the target
    heldout_n: int = 1000
    curve_every: int = 250
    fd_n: int = 500
    fd_steps: int = 25  # DDIM steps when sampling for FD
    cfg_scale: float = 1.5
    batch_size: int = 64
    extra: dict = field(default_factory=dict)


@dataclass
class Checkpointing:
    """Save a run's dense phase every `every` steps to `path`; past `deadline` (epoch seconds) save and pause."""

    path: Path
    every: int = 500
    deadline: float | None = None


class RunPaused(Exception):
    """A run saved its state at the deadline and stopped; running it again continues from there."""


def measure(model, test: ImageData, dataset: str, ecfg: EvalConfig, seed: int) -> dict:
    """Held-out loss (n = 2 x heldout_n, for a tighter estimate) and FD/KID at one budget point.

    Leaves the global RNG as it found it (something in it draws from it; most likely building the
    classifier), so measuring mid-run does not change the rest of the run: a 5,000-step run is the 20,000-step one's prefix.
    """
    with torch.random.fork_rng(devices=[]):
        out: dict = {"heldout": heldout_loss(model, Diffusion(), test, n=2 * ecfg.heldout_n)}
        clf = load_feature_classifier(dataset)
        if clf is None:
            return out
        real = test.subset(ecfg.fd_n, seed=seed)
        g = torch.Generator().manual_seed(seed)
        y = real.labels[torch.randperm(len(real), generator=g)]
        shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
        made = torch.cat([Diffusion().sample(model, y[i : i + 250], shape, steps=ecfg.fd_steps, cfg_scale=ecfg.cfg_scale,
                                             generator=g) for i in range(0, len(y), 250)])
        return out | named(sample_quality(made, real, clf), dataset)


def save_grid(model, path: Path, test: ImageData, ecfg: EvalConfig, seed: int) -> None:
    """Four samples per class of the test set, sampled as FD samples are (leaves the global RNG alone)."""
    with torch.random.fork_rng(devices=[]):
        sample_grid(model, path, per_class=4, steps=ecfg.fd_steps, cfg_scale=ecfg.cfg_scale, seed=seed,
                    classes=sorted(test.labels.unique().tolist()))


def fd_floor(train: ImageData, test: ImageData, dataset: str, n: int) -> dict:
    clf = load_feature_classifier(dataset)
    return {} if clf is None else named(floor(train, test, clf, n), dataset)


def apply_sigma_init(model, kind: str, seed: int) -> None:
    """Ablation: replace the interpolated (trained) sigma of a fine descendant (the paper's variants).

    `linear` is not applied here: it is the least-squares line over depth, i.e. TLEG's assembly.
    """
    if kind in ("interp", "linear"):
        return
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in (lin for b in model.blocks for lin in b.linears().values()):
            s = lin.sigma
            if kind == "random":
                s.copy_(torch.randn(s.shape, generator=g) * s.std())
            elif kind == "constant":
                s.fill_(s.mean().item())
            else:
                raise ValueError(kind)


def train_run(run: Run, lg: LearngeneSet, train: ImageData, test: ImageData, ecfg: EvalConfig,
              grids: Callable[[int], Path] | None = None, ckpt: Checkpointing | None = None,
              keep: Callable[[torch.nn.Module], None] | None = None, full_optim: OptimConfig | None = None,
              sigma_optim: OptimConfig | None = None,
              watch: Callable[[int, torch.nn.Module], None] | None = None) -> dict:
    """Train one descendant, measuring along the way.

    `grids(k)` names the sample grid PNG after k full steps: one of the final model, and for scratch
    one at each FD point too (a scratch run's shorter budgets exist only mid-run).

    `keep` is handed the final model (for diagnostics that look further than the record);
    `watch(step, model)` is called after every full step (step 0: right after the sigma stage).
    `full_optim` / `sigma_optim` replace the dense phase's / the sigma stage's optimiser settings
    (defaults: fine.pipeline.dense_optim with the run's `ema` / fine.spec.SIGMA_OPTIM); the curve and the
    measurements see the weights the dense phase would return (its EMA when it keeps one).

    With `ckpt`, the dense phase is checkpointed and a run found there continues exactly where it
    stopped (same batches, noise and measurements as an uninterrupted run); the file is removed at the end.
    """
    t0 = time.time()
    torch.manual_seed(run.seed)
    subset = train.subset(ecfg.subset, seed=run.seed)
    ancestry = truncate_rank(lg.model, run.rank) if run.rank else lg.model
    spec = run.spec(ecfg)
    # sigma_init "linear" is TLEG's assembly (the least-squares line over depth), then fine's sigma stage.
    built = spec.model_copy(update={"method": "linear-fit"}) if run.method == "fine" and run.sigma_init == "linear" else spec
    model = build_descendant(ancestry, built)
    diffusion = Diffusion()
    curve: list[dict] = []
    points: dict[str, dict] = {}  # full-step count -> measurements
    saved = torch.load(ckpt.path, weights_only=False) if ckpt is not None and ckpt.path.exists() else None
    if saved is not None and saved["run"] != run.key():
        raise ValueError(f"{ckpt.path} holds another run's state; delete it to start this run afresh")
    seconds_before = saved["seconds"] if saved else 0.0
    if saved is not None:  # init, sigma stage and the step-0 measurements are in the checkpoint
        curve, points = saved["curve"], saved["points"]
    state_of: list = []  # the getter train_all hands over

    def record(phase: str, step: int, model_now) -> None:
        curve.append({"phase": phase, "step": step,
                      "heldout": heldout_loss(model_now, diffusion, test, n=ecfg.heldout_n)})

    def after_init(model_now) -> None:
        if run.method == "fine":
            apply_sigma_init(model_now, run.sigma_init, run.seed)
        record("init", 0, model_now)

    def after_sigma(model_now) -> None:
        if watch is not None:
            watch(0, model_now)
        if 0 in run.fd_at:
            points["0"] = measure(model_now, test, run.dataset, ecfg, run.seed)

    def save() -> None:
        state: DenseResume = state_of[0]()
        tmp = ckpt.path.with_suffix(".tmp")
        ckpt.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"run": run.key(), "model": state.model, "train": vars(state.train), "curve": curve,
                    "points": points, "seconds": round(seconds_before + time.time() - t0, 1)}, tmp)
        tmp.replace(ckpt.path)

    def on_step(phase: str, step: int, model_now) -> None:
        if phase == "sigma":
            if step % ecfg.curve_every == 0 or step == run.sigma_steps:
                record("sigma", step, model_now)
            return
        if watch is not None:
            watch(step, model_now)
        if step % ecfg.curve_every == 0 or step == run.full_steps:
            record("full", step, model_now)
        if step in run.fd_at:
            points[str(step)] = measure(model_now, test, run.dataset, ecfg, run.seed)
            if grids is not None and run.method == "scratch" and step != run.full_steps:
                save_grid(model_now, grids(step), test, ecfg, run.seed)
            model_now.train()
        if ckpt is None or step == run.full_steps:
            return
        late = ckpt.deadline is not None and time.time() > ckpt.deadline
        if step % ckpt.every == 0 or late:
            save()
        if late:
            raise RunPaused(f"paused at step {step}/{run.full_steps}; state in {ckpt.path}")

    # A target with labels the ancestry never saw also trains the label table (as the service does).
    train_labels = saved is None and spec.sigma_steps_run > 0 and new_task(lg, subset, run.dataset)
    resume = DenseResume(saved["model"], TrainState(**saved["train"])) if saved is not None else None
    hooks = Hooks(after_init=after_init, after_sigma=after_sigma, on_step=on_step, on_state=state_of.append)
    # ... and a target with other pixels (channels, size) its input/output layers (as the service does).
    parts = adaptation_parts(lg.cfg, subset) if saved is None and spec.sigma_steps_run > 0 else ()
    full_optim = full_optim or replace(dense_optim(ecfg.batch_size), ema=run.ema)
    model = train_descendant(model, subset, spec, train_labels=train_labels, train_parts=parts, hooks=hooks,
                             finetune_optim=full_optim, sigma_optim=sigma_optim, resume=resume)
    final = curve[-1]["heldout"]
    if grids is not None:
        save_grid(model, grids(run.full_steps), test, ecfg, run.seed)
    if ckpt is not None:
        ckpt.path.unlink(missing_ok=True)
    if keep is not None:
        keep(model)
    return {**asdict(run), "heldout": final, "curve": curve, "points": points,
            "seconds": round(seconds_before + time.time() - t0, 1), "eval": asdict(ecfg)}


def curve_at(rec: dict, k: int) -> float | None:
    """Held-out loss on a run's curve after K full steps (K = 0: after init / the sigma stage)."""
    if k == 0:
        return [c for c in rec["curve"] if c["phase"] != "full"][-1]["heldout"]
    return next((c["heldout"] for c in rec["curve"] if c["phase"] == "full" and c["step"] == k), None)


def scratch_steps(scratch: dict, target: float) -> int | None:
    """First full step of a run's curve at or below `target` (None: never)."""
    return next((c["step"] for c in scratch["curve"] if c["phase"] == "full" and c["heldout"] <= target), None)


def longest(recs: list[dict], method: str, size: tuple[int, int], seed: int = 0) -> dict | None:
    """The seed's longest run of this method and size (scratch runs are split by budget; the longest has the whole curve)."""
    mine = [r for r in recs if r["method"] == method and r["seed"] == seed and (r["depth"], r["width"]) == size]
    return max(mine, key=lambda r: r["full_steps"], default=None)


def read_runs(*paths: Path) -> list[dict]:
    """Every record of these runs.jsonl files, in order; a missing file has none."""
    return [json.loads(line) for path in paths if path.exists() for line in path.read_text().splitlines() if line.strip()]


def done_keys(path: Path) -> set[str]:
    return {Run.from_record(rec).key() for rec in read_runs(path)}


def append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
