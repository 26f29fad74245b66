"""A small CNN image classifier whose penultimate features drive the FD/KID quality metrics.

It is trained by this project on each built-in dataset (see bench/train_classifier.py) and its
weights are committed with their sha256. Inputs are float images in [-1, 1], (N, C, H, W), like
`ImageData.as_float()`; any square size >= 8 and 1 or 3 channels work.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fine.data import ImageData, batches
from fine.formats import sha256_file

MIN_SIDE = 8
POOLED = 3  # the last feature map is average-pooled to POOLED x POOLED whatever the input size


class Classifier(nn.Module):
    """Three conv stages (BatchNorm, ReLU, max-pool) -> 3x3 pool -> FC features -> FC logits."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (32, 64, 128),
        feature_dim: int = 128,
    ):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if image_size < MIN_SIDE:
            raise ValueError(f"image_size must be >= {MIN_SIDE}, got {image_size}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.widths = tuple(widths)
        self.feature_dim = feature_dim
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            # Pool after the first two stages only: an 8x8 input still ends on a 2x2 map.
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c * POOLED * POOLED, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)
        self.dropout = nn.Dropout(0.2)
        # Per-unit statistics of the raw features on the training images, fixed after training
        # (`standardize_features`). Standardised features put FD and the cubic KID kernel on
        # the same scale for every classifier, whatever scale the FC layer happened to learn.
        self.register_buffer("feat_mean", torch.zeros(feature_dim))
        self.register_buffer("feat_std", torch.ones(feature_dim))

    def _check(self, x: torch.Tensor) -> None:
        want = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"classifier expects images of shape (N, {', '.join(map(str, want))}), got {tuple(x.shape)}"
            )

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        h = F.adaptive_avg_pool2d(self.body(x), POOLED)
        return self.fc(h.flatten(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) penultimate activations, before the ReLU, standardised per unit.

        Pre-activation values are closer to Gaussian than rectified ones (no mass piled at
        zero), which suits the Gaussian fit of the Frechet distance.
        """
        return (self.raw_features(x) - self.feat_mean) / self.feat_std

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(F.relu(self.raw_features(x))))

    @torch.no_grad()
    def standardize_features(self, x: torch.Tensor, batch_size: int = 500) -> None:
        """Fix feat_mean / feat_std from images x (the training images), in eval mode."""
        was_training = self.training
        self.eval()
        raw = torch.cat([self.raw_features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        self.train(was_training)
        self.feat_mean.copy_(raw.mean(0))
        # Dead units have zero spread; leave them unscaled rather than divide by ~0.
        std = raw.std(0)
        self.feat_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    def arch(self) -> dict[str, object]:
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "widths": list(self.widths),
            "feature_dim": self.feature_dim,
        }


# -- training ------------------------------------------------------------------------------------
def random_shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Translate every image by its own random (dy, dx) in [-max_shift, max_shift], edge-padded."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    dy = torch.randint(0, 2 * s + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (n, w)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def train_classifier(
    data: ImageData,
    steps: int,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 2e-3,
    max_shift: int = 2,
    progress: Callable[[int, float], None] | None = None,
) -> Classifier:
    """Train a classifier on `data` with Adam and a cosine learning-rate decay; returns it in eval mode."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)  # parameter init and dropout
    model = Classifier(data.channels, data.image_size, data.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    aug = torch.Generator().manual_seed(seed + 1)
    stream = batches(data, min(batch_size, len(data)), seed)
    model.train()
    for step in range(steps):
        x, y = next(stream)
        loss = F.cross_entropy(model(random_shift(x, max_shift, aug)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step + 1, loss.item())
    model.eval()
    model.standardize_features(data.subset(10000, seed=seed).as_float())
    return model


@torch.no_grad()
def accuracy(model: Classifier, data: ImageData, batch_size: int = 500) -> float:
    was_training = model.training
    model.eval()
    x_all = data.as_float()
    correct = 0
    for i in range(0, len(data), batch_size):
        pred = model.logits(x_all[i : i + batch_size]).argmax(1)
        correct += int((pred == data.labels[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / len(data)


# -- persistence ---------------------------------------------------------------------------------
file_sha256 = sha256_file  # one implementation of the file hash, kept under its old name


def save_classifier(model: Classifier, path: str | Path, extra: dict[str, str] | None = None) -> str:
    """Write the weights (architecture in the safetensors metadata); returns the file's sha256."""
    meta = {"format": "fine-classifier", "arch": json.dumps(model.arch(), sort_keys=True)}
    meta.update(extra or {})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return file_sha256(path)


def read_sha256sums(path: str | Path) -> dict[str, str]:
    """{file name: hex digest} from a file in `sha256sum` format (text or binary mode)."""
    sums: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition(" ")
        sums[name.lstrip(" *")] = digest.lower()
    return sums


def load_classifier(path: str | Path, sha256: str | None = None) -> Classifier:
    """Load weights after checking the file's sha256; returns the model in eval mode.

    The expected digest is `sha256`, or else the file's entry in a SHA256SUMS file beside it:
    loading never happens unchecked.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"classifier weights {path} not found")
    if sha256 is None:
        sums_file = path.parent / "SHA256SUMS"
        sums = read_sha256sums(sums_file) if sums_file.exists() else {}
        if path.name not in sums:
            raise ValueError(f"no expected sha256 for {path}: pass sha256= or list it in {sums_file}")
        sha256 = sums[path.name]
    actual = file_sha256(path)
    if actual != sha256.lower():
        raise ValueError(f"sha256 mismatch for {path}: expected {sha256.lower()}, got {actual}")
    state = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "fine-classifier" or "arch" not in meta:
        raise ValueError(f"{path} is not a fine classifier checkpoint (metadata: {sorted(meta)})")
    arch = json.loads(meta["arch"])
    model = Classifier(
        arch["in_channels"],
        arch["image_size"],
        arch["num_classes"],
        tuple(arch["widths"]),
        arch["feature_dim"],
    )
    model.load_state_dict(state)
    return model.eval()
