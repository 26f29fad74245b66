"""Export a dense fine-zoo DiT to the layout of diffusers' `DiTTransformer2DModel`.

Our DiT follows diffusers' conventions on purpose (cosine-first timestep features with
frequency divisor half-1, 2-D sin-cos positions with the w coordinate in the first half, adaLN
chunk order shift/scale/gate for attention then MLP, final layer shift then scale, unpatchify
nhwpqc->nchpwq), so the export is a pure renaming of tensors plus two structural changes:

- our fused `qkv` linear is split into diffusers' `to_q`, `to_k`, `to_v`;
- diffusers keeps a timestep + label embedder inside EVERY block (`norm1.emb`), where we have one
  shared embedder; it is copied into each block (the final layer of diffusers reads block 0's).

This module does not import diffusers: the export works without it (only the tests load the
result in diffusers). The output directory holds `config.json` (with `_class_name`) and
`diffusion_pytorch_model.safetensors`, which `DiTTransformer2DModel.from_pretrained(dir)` loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from fine.config import DiTConfig
from fine.formats import load_dense
from fine.model import LN_EPS, DiT

DIFFUSERS_CLASS = "DiTTransformer2DModel"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

# diffusers' CombinedTimestepLabelEmbeddings hard-codes 256 sinusoidal timestep features, and its
# FeedForward (not given an inner dim by DiTTransformer2DModel) uses 4x the width.
DIFFUSERS_FREQ_DIM = 256
DIFFUSERS_MLP_RATIO = 4

# Our name -> diffusers name, per tensor ("{i}": block index; every name also gets .weight/.bias
# unless it names a tensor itself). Embedder rows marked "{i}" on the right only are replicated into
# every block. qkv is handled separately (one of ours -> three of theirs), see QKV_SPLIT.
_EMB = "transformer_blocks.{i}.norm1.emb"
NAME_MAP: tuple[tuple[str, str], ...] = (
    # patch embedding (diffusers' PatchEmbed also owns the fixed sin-cos positions; not stored)
    ("x_embedder.proj", "pos_embed.proj"),
    # timestep and label embedders: ONE of ours -> one copy per diffusers block
    ("t_embedder.mlp.0", f"{_EMB}.timestep_embedder.linear_1"),
    ("t_embedder.mlp.2", f"{_EMB}.timestep_embedder.linear_2"),
    ("y_embedder.embedding_table.weight", f"{_EMB}.class_embedder.embedding_table.weight"),
    # blocks
    ("blocks.{i}.adaLN", "transformer_blocks.{i}.norm1.linear"),
    ("blocks.{i}.attn.proj", "transformer_blocks.{i}.attn1.to_out.0"),
    ("blocks.{i}.mlp.fc1", "transformer_blocks.{i}.ff.net.0.proj"),
    ("blocks.{i}.mlp.fc2", "transformer_blocks.{i}.ff.net.2"),
    # final layer
    ("final_layer.adaLN", "proj_out_1"),
    ("final_layer.linear", "proj_out_2"),
)
# blocks.{i}.attn.qkv rows are [q; k; v] (each hidden_size rows, heads contiguous inside each).
QKV_SPLIT: tuple[str, tuple[str, str, str]] = (
    "blocks.{i}.attn.qkv",
    (
        "transformer_blocks.{i}.attn1.to_q",
        "transformer_blocks.{i}.attn1.to_k",
        "transformer_blocks.{i}.attn1.to_v",
    ),
)


def check_exportable(cfg: DiTConfig, base_grid: int | None = None) -> None:
    """Raise ValueError when diffusers' DiT cannot compute the same function as ours."""
    problems = []
    if base_grid is not None and base_grid != cfg.grid_size:
        problems.append(
            f"the model evaluates its position embedding on a {cfg.grid_size}x{cfg.grid_size} token "
            f"grid scaled to a {base_grid}x{base_grid} base grid (a descendant served at another image "
            "size); diffusers' DiTTransformer2DModel always uses integer positions of its own grid, so "
            "it cannot reproduce these position embeddings"
        )
    if cfg.freq_dim != DIFFUSERS_FREQ_DIM:
        problems.append(
            f"freq_dim is {cfg.freq_dim}; diffusers' DiT hard-codes {DIFFUSERS_FREQ_DIM} timestep features"
        )
    if cfg.mlp_ratio != DIFFUSERS_MLP_RATIO:
        problems.append(f"mlp_ratio is {cfg.mlp_ratio}; diffusers' DiT hard-codes {DIFFUSERS_MLP_RATIO}")
    if problems:
        raise ValueError("cannot export to diffusers: " + "; ".join(problems))


def diffusers_config(cfg: DiTConfig) -> dict:
    """The `DiTTransformer2DModel` config (init arguments) of a model with this architecture."""
    return {
        "_class_name": DIFFUSERS_CLASS,
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.in_channels,  # noise prediction only (no learned variance)
        "num_layers": cfg.depth,
        "dropout": 0.0,
        "norm_num_groups": 32,  # unused by the DiT path; diffusers' default
        "attention_bias": True,
        "sample_size": cfg.image_size,  # pixel space: the "latent" is the image
        "patch_size": cfg.patch_size,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": cfg.num_classes,  # diffusers adds the null (CFG) row itself
        "upcast_attention": False,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": LN_EPS,
    }


def _suffixes(name: str) -> tuple[str, ...]:
    return ("",) if name.endswith(".weight") or name.endswith(".bias") else (".weight", ".bias")


def to_diffusers_state_dict(model: DiT) -> dict[str, torch.Tensor]:
    """Our state dict renamed (and qkv split, embedders replicated) to diffusers' DiT names.

    A factored (learngene-backed) model is materialised first. Every tensor of ours is used
    exactly once (else this raises), so a change to our model cannot silently drop weights.
    """
    if model.genes is not None:
        model = model.materialize()
    check_exportable(model.cfg, model.base_grid)
    cfg = model.cfg
    ours = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        if name not in ours:
            raise KeyError(f"model has no tensor {name!r} (name map out of date?)")
        used.add(name)
        return ours[name]

    for src, dst in NAME_MAP:
        for suffix in _suffixes(src):
            if "{i}" in src:  # one tensor per block on both sides
                for i in range(cfg.depth):
                    out[dst.format(i=i) + suffix] = take(src.format(i=i) + suffix).clone()
            elif "{i}" in dst:  # one shared tensor of ours -> a copy in every diffusers block
                tensor = take(src + suffix)
                for i in range(cfg.depth):
                    out[dst.format(i=i) + suffix] = tensor.clone()
            else:
                out[dst + suffix] = take(src + suffix).clone()

    src, dsts = QKV_SPLIT
    for i in range(cfg.depth):
        for suffix in (".weight", ".bias"):
            parts = take(src.format(i=i) + suffix).chunk(3, dim=0)
            for dst, part in zip(dsts, parts, strict=True):
                out[dst.format(i=i) + suffix] = part.clone().contiguous()

    left = sorted(set(ours) - used)
    if left:
        raise ValueError(f"tensors of the model not covered by the diffusers name map: {left}")
    return out


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def export_diffusers(dense_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write a dense checkpoint (from `fine.formats.save_dense`) as a diffusers DiT directory.

    `out_dir` defaults to `dense_dir/diffusers`. Returns `out_dir`, which then holds
    `config.json` and `diffusion_pytorch_model.safetensors`.
    """
    dense_dir = Path(dense_dir)
    out_dir = dense_dir / "diffusers" if out_dir is None else Path(out_dir)
    model, meta = load_dense(dense_dir)
    state = to_diffusers_state_dict(model)
    config = diffusers_config(model.cfg)

    provenance = {
        "format": "pt",  # what diffusers/transformers write into safetensors metadata
        "fine_export": "diffusers/" + DIFFUSERS_CLASS,
        "fine_config": model.cfg.to_json(),
        "fine_source_sha256": str(meta.get("sha256", "")),
    }
    for key in ("learngene_id", "method", "dataset", "steps"):
        if key in meta:
            value = meta[key]
            provenance[f"fine_{key}"] = value if isinstance(value, str) else json.dumps(value)

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata=provenance))
    _write_atomic(
        out_dir / CONFIG_NAME,
        lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"),
    )
    return out_dir
