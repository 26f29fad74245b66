"""The method's commands of the `fine` command line: pretrain, init, sample, eval.

The `fine` script itself (fine_zoo/cli.py) adds `serve` and `worker`. Options, defaults and limits
come from fine/spec.py. Every user error is one line on stderr and a non-zero exit; long steps show
progress bars.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fine.spec import (
    JOB_LIMITS,
    LAYER_FORMS,
    METHODS,
    SAMPLERS,
    SCHEDULES,
    SIGMA_INITS,
    JobSpec,
    PretrainSpec,
    default_subnet_depths,
    width_fits,
)
from fine.spec import default_learngene as shipped_default


class CliError(Exception):
    """An error to print as one line, without a traceback."""


def _progress_bar() -> Callable[[str, int, int, float | None], None]:
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(phase: str, step: int, total: int, loss: float | None) -> None:
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = tqdm(total=total, desc=phase, unit="step", dynamic_ncols=True)
        bar.n = step
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.refresh()
        if step >= total:
            bar.close()

    return update


def cmd_pretrain(a: argparse.Namespace) -> None:
    import time

    import torch

    from fine.config import DiTConfig
    from fine.data import load
    from fine.pretrain import PretrainConfig, pretrain
    from fine.training import OptimConfig, default_widths

    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = DiTConfig(
        image_size=a.image_size, in_channels=a.channels, patch_size=a.patch_size, depth=a.depth,
        hidden_size=a.hidden_size, head_dim=a.head_dim, num_classes=a.num_classes, rank=a.rank,
    )
    if a.widths == "all":
        widths = default_widths(cfg, a.min_width)
    elif a.widths == "none":
        widths = []
    else:
        widths = [int(w) for w in a.widths.split(",")]
    train, test = load(a.dataset, "train"), load(a.dataset, "test")
    if train.image_size != cfg.image_size or train.channels != cfg.in_channels:
        raise CliError(
            f"{a.dataset} has {train.channels}x{train.image_size}x{train.image_size} images; "
            f"pass --image-size {train.image_size} --channels {train.channels}"
        )
    eval_widths = default_widths(cfg, a.min_width)  # log every offered width, trained or not
    depths = _depth_list(a.depths, cfg.depth)
    pcfg = PretrainConfig(steps=a.steps, widths=widths, widths_per_step=a.widths_per_step, ema_decay=a.ema,
                          seed=a.seed, ckpt_every=a.ckpt_every, eval_every=a.eval_every, name=a.name,
                          eval_widths=eval_widths, sigma_init=a.sigma_init, sigma_lr_scale=a.sigma_lr_scale,
                          depths=depths, depths_per_step=a.depths_per_step,
                          eval_depths=_depth_list(a.eval_depths, cfg.depth), layer_form=a.layer_form)
    optim = OptimConfig(lr=a.lr, warmup=a.warmup, batch_size=a.batch_size, schedule=a.schedule)
    deadline = time.time() + 60 * a.stop_after if a.stop_after else None
    side = pretrain(a.out, cfg, train, test, pcfg, optim, progress=_progress_bar(), deadline=deadline)
    print(f"learngene {side['id']} sha256 {side['sha256']} -> {Path(a.out) / 'learngene'}")


def _depth_list(text: str, full: int) -> list[int]:
    """'auto' (the spec's rule: 1 .. 1.5x `full`), 'none', '1-5' or '2,4,6'."""
    if text == "none":
        return []
    if text == "auto":
        return default_subnet_depths(full)
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-"))
            return list(range(lo, hi + 1))
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise CliError(f"depths must be 'auto', 'none', a range like 1-5 or a list like 2,4,6; got {text!r}") from None


INIT_FLAGS = {"subset_size": "subset"}  # JobSpec fields whose `fine init` flag is not the field's name


def _flag(name: str) -> str:
    return INIT_FLAGS.get(name, name).replace("_", "-")


def _spec_from_args(a: argparse.Namespace) -> JobSpec:
    """The job spec `fine init` was asked for (its learngene is a file, passed separately)."""
    return JobSpec(depth=a.depth, hidden_size=a.hidden_size, dataset=a.dataset, method=a.method,
                   sigma_steps=a.sigma_steps, subset_size=a.subset, finetune_steps=a.finetune_steps, seed=a.seed,
                   train_bias=not a.sigma_only, batch_size=a.batch_size, eval_images=a.eval_images,
                   sample_steps=a.sample_steps, sampler=a.sampler)


def _check_spec(spec: JobSpec, learngene_cfg) -> None:  # noqa: ANN001
    """Validate the descendant spec before loading any data (fast, one-line errors)."""
    from fine.data import BUILTIN, parse_name

    for name, (lo, hi) in JOB_LIMITS.items():
        value = getattr(spec, name)
        if value < lo:
            raise CliError(f"--{_flag(name)} must be >= {lo}, got {value}")
        if value > hi:
            raise CliError(f"--{_flag(name)} must be <= {hi}, got {value}")
    d, hd = learngene_cfg.hidden_size, learngene_cfg.head_dim
    if not width_fits(spec.hidden_size, hd, d):
        raise CliError(f"--hidden-size must be a multiple of {hd} between {hd} and {d} (the learngene's width), "
                       f"got {spec.hidden_size}")
    if spec.method not in METHODS:
        raise CliError(f"unknown --method {spec.method!r}: use one of {', '.join(METHODS)}")
    base, _ = parse_name(spec.dataset)
    if base not in BUILTIN and not base.endswith(".npz"):
        raise CliError(f"unknown dataset {base!r}: use one of {', '.join(BUILTIN)} or a path to an .npz file")


def default_learngene() -> Path:
    """FINE_LEARNGENE when set, else the shipped default."""
    env = os.environ.get("FINE_LEARNGENE")
    return Path(env) if env else shipped_default()


def cmd_init(a: argparse.Namespace) -> None:
    import torch

    from fine.formats import load_learngene
    from fine.pipeline import init_descendant

    if a.threads:
        torch.set_num_threads(a.threads)
    spec = _spec_from_args(a)
    path = a.learngene or default_learngene()
    lg = load_learngene(path)
    _check_spec(spec, lg.cfg)
    result = init_descendant(spec, path, out_dir=a.out, progress=_progress_bar(), learngene=lg)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if isinstance(v, float))
    print(f"wrote {', '.join(sorted(p.name for p in result.files.values()))} to {a.out}" + (f"; {shown}" if shown else ""))


def cmd_sample(a: argparse.Namespace) -> None:
    from fine.formats import load_dense
    from fine.pipeline import sample_grid

    model, _ = load_dense(a.checkpoint)
    path = sample_grid(model, Path(a.out), per_class=a.per_class, steps=a.steps, cfg_scale=a.cfg_scale, seed=a.seed,
                       sampler=a.sampler)
    print(f"wrote {path}")


def cmd_eval(a: argparse.Namespace) -> None:
    import json

    from fine.data import load
    from fine.formats import load_dense
    from fine.pipeline import evaluate

    model, config = load_dense(a.checkpoint)
    dataset = a.dataset or config.get("dataset")
    if not dataset:
        raise CliError("the checkpoint names no dataset: pass --dataset")
    test = load(dataset, "test")
    metrics = evaluate(model.eval(), test, dataset, n_images=a.eval_images, sample_steps=a.sample_steps,
                       progress=_progress_bar(), sampler=a.sampler)
    print(json.dumps(metrics, indent=2, sort_keys=True))


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _default(spec: type[JobSpec | PretrainSpec], name: str) -> object:
    return spec.model_fields[name].default


def _help(spec: type[JobSpec | PretrainSpec], name: str) -> str | None:
    return spec.model_fields[name].description


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The parser of the method's commands, and its subcommands (fine_zoo.cli adds serve and worker)."""
    p = _Parser(prog="fine", description="FINE: learngene initialisation of diffusion transformers")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    pt = sub.add_parser("pretrain", help="pre-train an ancestry and export its learngene set (resumable)")
    pt.add_argument("--dataset", default="fashion-mnist")
    pt.add_argument("--out", required=True, help="run directory (re-run the same command to resume)")
    for name in ("depth", "hidden_size", "head_dim", "rank", "patch_size"):
        pt.add_argument(f"--{_flag(name)}", type=int, default=_default(PretrainSpec, name))
    pt.add_argument("--image-size", type=int, default=28)
    pt.add_argument("--channels", type=int, default=1)
    pt.add_argument("--num-classes", type=int, default=10)
    pt.add_argument("--steps", type=int, default=_default(PretrainSpec, "steps"))
    pt.add_argument("--batch-size", type=int, default=_default(PretrainSpec, "batch_size"))
    pt.add_argument("--lr", type=float, default=_default(PretrainSpec, "lr"))
    pt.add_argument("--warmup", type=int, default=_default(PretrainSpec, "warmup"))
    pt.add_argument("--ema", type=float, default=_default(PretrainSpec, "ema_decay"))
    pt.add_argument("--widths", default="all", help="'all' (every head multiple >= --min-width), 'none', or a list")
    pt.add_argument("--min-width", type=int, default=64)
    pt.add_argument("--widths-per-step", type=int, default=None)
    pt.add_argument("--sigma-init", default=_default(PretrainSpec, "sigma_init"), help=" | ".join(SIGMA_INITS))
    pt.add_argument("--sigma-lr-scale", type=float, default=_default(PretrainSpec, "sigma_lr_scale"),
                    help="sigma's rate as a multiple of --lr")
    pt.add_argument("--depths", default="auto", help="depth-aware: 'auto' (1 .. 1.5x --depth), 'none', 1-5, 2,4")
    pt.add_argument("--depths-per-step", type=int, default=1)
    pt.add_argument("--layer-form", default=_default(PretrainSpec, "layer_form"), choices=LAYER_FORMS,
                    help="free (FINE) | linear (a TLEG ancestry; `--method linear-fit` is then TLEG)")
    pt.add_argument("--eval-depths", default="none", help="depths whose assembled held-out loss is logged")
    pt.add_argument("--schedule", default=_default(PretrainSpec, "schedule"),
                    help=" | ".join(SCHEDULES) + " (decay over --steps after warm-up)")
    pt.add_argument("--seed", type=int, default=_default(PretrainSpec, "seed"))
    pt.add_argument("--ckpt-every", type=int, default=250)
    pt.add_argument("--eval-every", type=int, default=250)
    pt.add_argument("--threads", type=int, default=0)
    pt.add_argument("--name", default="fmnist", help="learngene id prefix (the API's default is 'learngene')")
    pt.add_argument("--stop-after", type=float, default=0, help="minutes; then checkpoint and stop (re-run to resume)")
    pt.set_defaults(func=cmd_pretrain)

    it = sub.add_parser("init", help="assemble a descendant, train its sigma, evaluate and save it")
    it.add_argument("--depth", type=int, required=True)
    it.add_argument("--hidden-size", type=int, required=True)
    it.add_argument("--dataset", required=True, help="fashion-mnist, mnist-5k, digits (+ ':5-9' filter) or a .npz")
    it.add_argument("--method", default=_default(JobSpec, "method"), help=" | ".join(METHODS))
    for name in ("sigma_steps", "subset_size", "finetune_steps"):
        it.add_argument(f"--{_flag(name)}", type=int, default=_default(JobSpec, name), help=_help(JobSpec, name))
    it.add_argument("--sigma-only", action="store_true", help="train sigma only, not the block biases")
    for name in ("seed", "batch_size", "eval_images", "sample_steps"):
        it.add_argument(f"--{_flag(name)}", type=int, default=_default(JobSpec, name), help=_help(JobSpec, name))
    it.add_argument("--sampler", default=_default(JobSpec, "sampler"), choices=SAMPLERS)
    it.add_argument("--learngene", type=Path, default=None, help="learngene.safetensors (default: the shipped one)")
    it.add_argument("--threads", type=int, default=0)
    it.add_argument("--out", type=Path, required=True)
    it.set_defaults(func=cmd_init)

    sp = sub.add_parser("sample", help="sample a grid (one row per class) from a dense checkpoint")
    sp.add_argument("checkpoint", type=Path, help="directory with model.safetensors and config.json")
    sp.add_argument("--out", default="samples.png")
    sp.add_argument("--per-class", type=int, default=8)
    sp.add_argument("--steps", type=int, default=_default(JobSpec, "sample_steps"))
    sp.add_argument("--sampler", default=_default(JobSpec, "sampler"), choices=SAMPLERS)
    sp.add_argument("--cfg-scale", type=float, default=2.0)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_sample)

    ev = sub.add_parser("eval", help="held-out loss and classifier-feature FD/KID of a dense checkpoint")
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("--dataset", default=None)
    ev.add_argument("--eval-images", type=int, default=500)
    ev.add_argument("--sample-steps", type=int, default=_default(JobSpec, "sample_steps"))
    ev.add_argument("--sampler", default=_default(JobSpec, "sampler"), choices=SAMPLERS)
    ev.set_defaults(func=cmd_eval)

    return p, sub


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command; user errors are one line on stderr (exit 2)."""
    args = (parser or build_parser()[0]).parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("fine: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, FileNotFoundError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"fine {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
