"""Assemble a descendant of any depth and width from a learngene set, and the baselines.

Methods (one code path, same data, same budgets):
- `fine`: learngenes and body sliced to the width, per-layer sigma and biases interpolated over
  relative depth from the ancestry; then the sigma stage trains sigma.
- `linear-fit`: sigma and biases linear in depth (a least-squares line through the ancestry's
  layers: TLEG's assembly, exact on a layer_form=linear ancestry), no sigma stage.
- `weight-selection`: the ancestry's materialised dense weights sliced to the width, evenly
  spaced layers chosen.
- `scratch`: DiT's standard initialisation.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from fine.config import DiTConfig
from fine.model import DiT
from fine.spec import METHODS
from fine.width import check_width, slice_state

FACTORED_METHODS = ("fine", "linear-fit")
_LAYER_RE = re.compile(r"blocks\.(\d+)\.(.+)$")


def relative_positions(src_depth: int, depth: int) -> torch.Tensor:
    """Where each of `depth` new layers sits on the ancestry's layer axis (0 .. src_depth-1)."""
    if depth == 1:
        return torch.tensor([(src_depth - 1) / 2.0], dtype=torch.float64)
    return torch.linspace(0, src_depth - 1, depth, dtype=torch.float64)


def interpolate_layers(stack: torch.Tensor, depth: int) -> torch.Tensor:
    """Piecewise-linear interpolation of per-layer values (L, ...) to `depth` layers."""
    src = stack.shape[0]
    pos = relative_positions(src, depth)
    lo = pos.floor().long().clamp(max=src - 1)
    hi = (lo + 1).clamp(max=src - 1)
    w = (pos - lo.double()).to(stack.dtype).view(-1, *([1] * (stack.dim() - 1)))
    return stack[lo] * (1 - w) + stack[hi] * w


def linear_fit_layers(stack: torch.Tensor, depth: int) -> torch.Tensor:
    """The least-squares line through per-layer values, evaluated at `depth` new layers."""
    src = stack.shape[0]
    if src == 1:
        return stack.expand(depth, *stack.shape[1:]).clone()
    x = torch.arange(src, dtype=torch.float64)
    flat = stack.reshape(src, -1).double()
    xc = x - x.mean()
    slope = (xc[:, None] * (flat - flat.mean(0))).sum(0) / (xc**2).sum()
    icpt = flat.mean(0) - slope * x.mean()
    pos = relative_positions(src, depth)
    return (icpt[None] + pos[:, None] * slope[None]).to(stack.dtype).reshape(depth, *stack.shape[1:])


def evenly_spaced_layers(src_depth: int, depth: int) -> list[int]:
    return relative_positions(src_depth, depth).round().long().tolist()


def _per_layer(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]]:
    body: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[int, torch.Tensor]] = {}
    for k, v in state.items():
        m = _LAYER_RE.match(k)
        if m:
            layers.setdefault(m.group(2), {})[int(m.group(1))] = v
        else:
            body[k] = v
    return body, {k: [d[i] for i in sorted(d)] for k, d in layers.items()}


def respread_layers(
    state: dict[str, torch.Tensor], depth: int, spread: Callable[[torch.Tensor, int], torch.Tensor] = interpolate_layers
) -> dict[str, torch.Tensor]:
    """The same state with its per-layer tensors spread over `depth` layers (differentiable).

    Used on detached tensors to assemble a descendant and on live parameters for depth-aware
    pre-training, so both build a depth the same way.
    """
    body, layers = _per_layer(state)
    for name, values in layers.items():
        new = spread(torch.stack(values), depth)
        for j in range(depth):
            body[f"blocks.{j}.{name}"] = new[j]
    return body


@torch.no_grad()
def project_layers_linear_(model: DiT) -> None:
    """Put every per-layer tensor (sigma, biases) of `model` on its least-squares line over depth, in place.

    A TLEG ancestry (Xia et al.) is theta_l = theta_A + (l / L) theta_B; with U, V shared this is exactly
    sigma_l and b_l linear in l, which projecting after every optimiser step keeps.
    """
    state = {k: v for k, v in model.named_parameters() if _LAYER_RE.match(k)}
    fitted = respread_layers(state, model.cfg.depth, linear_fit_layers)
    for k, p in state.items():
        p.copy_(fitted[k])


def adapt_body(
    state: dict[str, torch.Tensor], src: DiTConfig, dst: DiTConfig
) -> dict[str, torch.Tensor]:
    """Adapt patch embedding, final layer and label table to other channel and class counts."""
    state = dict(state)
    cs, cd = src.in_channels, dst.in_channels
    if cs != cd:
        w = state["x_embedder.proj.weight"]  # (d, C, p, p)
        if cs == 1:
            # A grey image seen as C equal channels gives the same embedding as before.
            state["x_embedder.proj.weight"] = w.repeat(1, cd, 1, 1) / cd
        elif cd == 1:
            state["x_embedder.proj.weight"] = w.sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot adapt {cs} input channels to {cd}: only 1 <-> C is supported")
        p2 = src.patch_size**2
        lw, lb = state["final_layer.linear.weight"], state["final_layer.linear.bias"]  # rows (p, q, c)
        lw = lw.reshape(p2, cs, -1)
        lb = lb.reshape(p2, cs)
        if cs == 1:  # every colour channel starts from the grey prediction
            lw, lb = lw.expand(p2, cd, lw.shape[-1]), lb.expand(p2, cd)
        else:
            lw, lb = lw.mean(1, keepdim=True), lb.mean(1, keepdim=True)
        state["final_layer.linear.weight"] = lw.reshape(p2 * cd, -1).clone()
        state["final_layer.linear.bias"] = lb.reshape(-1).clone()
    if src.num_classes != dst.num_classes:
        table = state["y_embedder.embedding_table.weight"]  # (K + 1, d), last row = null label
        classes, null = table[:-1], table[-1:]
        k = dst.num_classes
        rows = classes[:k]
        if k > classes.shape[0]:  # new classes start at the mean class embedding
            rows = torch.cat([rows, classes.mean(0, keepdim=True).expand(k - classes.shape[0], -1)])
        state["y_embedder.embedding_table.weight"] = torch.cat([rows, null]).clone()
    return state


def descendant_config(
    src: DiTConfig,
    depth: int,
    width: int,
    *,
    factored: bool,
    image_size: int | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
) -> DiTConfig:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    check_width(src, width)
    image_size = image_size or src.image_size
    if image_size % src.patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the learngene's patch size {src.patch_size}")
    return src.replace(
        depth=depth,
        hidden_size=width,
        image_size=image_size,
        in_channels=in_channels or src.in_channels,
        num_classes=num_classes or src.num_classes,
        rank=src.rank if factored else None,
    )


@torch.no_grad()
def assemble(
    ancestry: DiT,
    depth: int,
    width: int,
    method: str = "fine",
    *,
    image_size: int | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> DiT:
    """A descendant of the given depth and width (and image size, channels, classes)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if ancestry.genes is None:
        raise ValueError("the ancestry must be a learngene-backed (factored) model")
    src = ancestry.cfg
    cfg = descendant_config(src, depth, width, factored=method in FACTORED_METHODS,
                            image_size=image_size, in_channels=in_channels, num_classes=num_classes)
    # Keep the ancestry's position function: a new grid evaluates it at interpolated positions.
    base_grid = ancestry.base_grid
    if method == "scratch":
        torch.manual_seed(seed)
        model = DiT(cfg, base_grid=base_grid)
        model.initialize_weights(torch.Generator().manual_seed(seed))
        return model
    if method == "weight-selection":
        dense = ancestry.materialize()
        sliced = slice_state(dense.state_dict(), dense.cfg, width)
        body, layers = _per_layer(sliced)
        picks = evenly_spaced_layers(src.depth, depth)
        state = adapt_body(body, src, cfg)
        for name, values in layers.items():
            for j, i in enumerate(picks):
                state[f"blocks.{j}.{name}"] = values[i].clone()
    else:
        sliced = slice_state({k: v.detach() for k, v in ancestry.state_dict().items()}, src, width)
        spread = interpolate_layers if method == "fine" else linear_fit_layers
        state = adapt_body(respread_layers(sliced, depth, spread), src, cfg)
    model = DiT(cfg, base_grid=base_grid)
    model.load_state_dict({k: v.clone() for k, v in state.items()})
    return model


@torch.no_grad()
def truncate_rank(ancestry: DiT, rank: int) -> DiT:
    """The ancestry with each learngene cut to its `rank` strongest components.

    A component k of type t is scored by mean_l |sigma_t,k(l)| * |u_k| * |v_k|, its average
    contribution to the layers' weights; U, V and every layer's sigma keep the top `rank`.
    """
    if ancestry.genes is None or ancestry.cfg.rank is None:
        raise ValueError("the ancestry must be a learngene-backed (factored) model")
    if not 1 <= rank <= ancestry.cfg.rank:
        raise ValueError(f"rank must be in 1..{ancestry.cfg.rank}, got {rank}")
    state = {k: v.clone() for k, v in ancestry.state_dict().items()}
    for kind, gene in ancestry.genes.items():
        sigmas = torch.stack([b.linears()[kind].sigma for b in ancestry.blocks])  # (L, r)
        score = sigmas.abs().mean(0) * gene.U.norm(dim=0) * gene.V.norm(dim=0)
        keep = score.argsort(descending=True)[:rank].sort().values
        state[f"genes.{kind}.U"] = gene.U[:, keep].clone()
        state[f"genes.{kind}.V"] = gene.V[:, keep].clone()
        for i in range(ancestry.cfg.depth):
            key = next(k for k in state if k.startswith(f"blocks.{i}.") and k.endswith(".sigma")
                       and ancestry.get_submodule(k[: -len(".sigma")]) is ancestry.blocks[i].linears()[kind])
            state[key] = state[key][keep].clone()
    model = DiT(ancestry.cfg.replace(rank=rank), base_grid=ancestry.base_grid)
    model.load_state_dict(state)
    return model
