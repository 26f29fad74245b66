"""Architecture configuration shared by dense and learngene-backed DiTs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

# The five block weight types that are factorised into learngenes.
WEIGHT_TYPES: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2", "adaLN")


@dataclass(frozen=True)
class DiTConfig:
    image_size: int = 28  # square images, pixel space (no VAE)
    in_channels: int = 1  # 1 (grayscale) or 3 (RGB)
    patch_size: int = 4  # 28 / 4 -> a 7x7 token grid
    depth: int = 6  # number of transformer blocks
    hidden_size: int = 128  # model width d
    head_dim: int = 32  # widths are sliced in whole heads of this size
    mlp_ratio: int = 4  # MLP hidden units = mlp_ratio * d
    num_classes: int = 10  # one extra "null" label is added for classifier-free guidance
    class_dropout: float = 0.1  # probability of training with the null label
    rank: int | None = None  # learngene rank r; None means an ordinary dense DiT
    freq_dim: int = 256  # size of the sinusoidal timestep features

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.hidden_size % self.head_dim:
            raise ValueError(
                f"hidden_size must be a multiple of the head size {self.head_dim}, got {self.hidden_size}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def factored(self) -> bool:
        return self.rank is not None

    def replace(self, **changes: object) -> DiTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown DiTConfig keys: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def linear_shapes(cfg: DiTConfig) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of each block weight type."""
    d, h = cfg.hidden_size, cfg.mlp_ratio * cfg.hidden_size
    return {"qkv": (3 * d, d), "proj": (d, d), "fc1": (h, d), "fc2": (d, h), "adaLN": (6 * d, d)}
