"""Consistent width slicing: keep the first d' coordinates of every hidden dimension.

One table says, for every parameter of a DiT, which of its axes run over a hidden dimension and
how that dimension is laid out (plain, in k equal chunks, or MLP hidden units). The same table
serves descendant assembly (on detached tensors) and width-aware pre-training (on live
parameters, so gradients flow back into the full-width ones).
"""

from __future__ import annotations

import re

import torch

from fine.config import DiTConfig

# Layout of each linear type's (out, in) axes.
_LINEAR_AXES = {
    "qkv": ("chunk3", "hidden"),
    "proj": ("hidden", "hidden"),
    "fc1": ("mlp", "hidden"),
    "fc2": ("hidden", "mlp"),
    "adaLN": ("chunk6", "hidden"),
}
_BLOCK_PATHS = {"attn.qkv": "qkv", "attn.proj": "proj", "mlp.fc1": "fc1", "mlp.fc2": "fc2", "adaLN": "adaLN"}

_BODY_AXES: dict[str, tuple[str | None, ...]] = {
    "x_embedder.proj.weight": ("hidden",),
    "x_embedder.proj.bias": ("hidden",),
    "t_embedder.mlp.0.weight": ("hidden", None),
    "t_embedder.mlp.0.bias": ("hidden",),
    "t_embedder.mlp.2.weight": ("hidden", "hidden"),
    "t_embedder.mlp.2.bias": ("hidden",),
    "y_embedder.embedding_table.weight": (None, "hidden"),
    "final_layer.adaLN.weight": ("chunk2", "hidden"),
    "final_layer.adaLN.bias": ("chunk2",),
    "final_layer.linear.weight": (None, "hidden"),
    "final_layer.linear.bias": (None,),
}
_BLOCK_RE = re.compile(r"blocks\.\d+\.(.+)\.(weight|bias|sigma)$")
_GENE_RE = re.compile(r"genes\.(\w+)\.(U|V)$")


def axes_of(name: str) -> tuple[str | None, ...]:
    """Which hidden layout each axis of parameter `name` has (None: not a hidden axis)."""
    if name in _BODY_AXES:
        return _BODY_AXES[name]
    if m := _GENE_RE.match(name):
        out_ax, in_ax = _LINEAR_AXES[m.group(1)]
        return (out_ax if m.group(2) == "U" else in_ax, None)
    if m := _BLOCK_RE.match(name):
        out_ax, in_ax = _LINEAR_AXES[_BLOCK_PATHS[m.group(1)]]
        return {"weight": (out_ax, in_ax), "bias": (out_ax,), "sigma": (None,)}[m.group(2)]
    raise KeyError(f"no width layout known for parameter {name!r}")


def hidden_index(layout: str, d: int, width: int, mlp_ratio: int) -> torch.Tensor:
    """Indices kept when a dimension of the given layout shrinks from width d to `width`."""
    if layout == "hidden":
        return torch.arange(width)
    if layout == "mlp":
        return torch.arange(mlp_ratio * width)
    if layout.startswith("chunk"):
        k = int(layout[5:])
        return torch.cat([i * d + torch.arange(width) for i in range(k)])
    raise ValueError(layout)


def check_width(cfg: DiTConfig, width: int) -> None:
    if width % cfg.head_dim:
        raise ValueError(f"hidden size must be a multiple of the head size {cfg.head_dim}, got {width}")
    if not cfg.head_dim <= width <= cfg.hidden_size:
        raise ValueError(
            f"hidden size must be between {cfg.head_dim} and {cfg.hidden_size} (the ancestry's width), got {width}"
        )


def slice_tensor(name: str, value: torch.Tensor, cfg: DiTConfig, width: int) -> torch.Tensor:
    for axis, layout in enumerate(axes_of(name)):
        if layout is not None:
            idx = hidden_index(layout, cfg.hidden_size, width, cfg.mlp_ratio).to(value.device)
            value = value.index_select(axis, idx)
    return value


def slice_state(state: dict[str, torch.Tensor], cfg: DiTConfig, width: int) -> dict[str, torch.Tensor]:
    """The parameters of the width-`width` prefix sub-network (differentiable when `state` is)."""
    check_width(cfg, width)
    if width == cfg.hidden_size:
        return dict(state)
    return {k: slice_tensor(k, v, cfg, width) for k, v in state.items()}
