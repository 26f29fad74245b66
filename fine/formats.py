"""On-disk formats: learngene sets, dense checkpoints and factored checkpoints (safetensors).

- learngene set: `learngene.safetensors` (U, V, shared body, ancestry sigma and biases) +
  `config.json` sidecar (id, sha256, sizes) — what the registry stores and versions.
- dense: `model.safetensors` + `config.json`; the safetensors `__metadata__` carries the same
  keys as strings.
- factored: sigma, biases and the non-shared tensors of a descendant, plus a reference
  (id + sha256) to its learngene set; it materialises to the dense form on demand.
Every loader checks shapes and hashes and fails with a one-line `FormatError`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fine.common import maybe_json, sha256_file
from fine.config import DiTConfig
from fine.model import DiT
from fine.width import slice_tensor

LEARNGENE_FORMAT = "fine-learngene/1"
DENSE_FORMAT = "fine-dense/1"
FACTORED_FORMAT = "fine-factored/1"


class FormatError(ValueError):
    """A checkpoint or learngene file that cannot be used as asked."""


def _stringify(meta: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=_stringify(meta))
    os.replace(tmp, path)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors `__metadata__` header, without reading any tensor."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except Exception as e:
        raise FormatError(f"{path}: not a readable safetensors file ({e})") from None


def _load_tensors(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise FormatError(f"{path}: sha256 mismatch (expected {expected_sha256[:12]}…, file has {actual[:12]}…)")
    try:
        return load_file(str(path))
    except Exception as e:
        raise FormatError(f"{path}: not a readable safetensors file ({e})") from None


def _load_into(model: DiT, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise FormatError(f"{path}: tensors do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise FormatError(f"{path}: tensor {k} has shape {tuple(v.shape)}, config needs {tuple(expected[k].shape)}")
    model.load_state_dict(state)


# -- learngene sets ------------------------------------------------------------------------------
@dataclass
class LearngeneSet:
    model: DiT  # the factored ancestry (genes, body, per-layer sigma and biases)
    meta: dict
    sha256: str

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def cfg(self) -> DiTConfig:
        return self.model.cfg


def save_learngene(directory: str | Path, model: DiT, meta: dict) -> dict:
    """Write learngene.safetensors + config.json; returns the sidecar (with id and sha256)."""
    if model.genes is None:
        raise FormatError("a learngene set is saved from a factored (learngene-backed) model")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "learngene.safetensors"
    cfg = model.cfg
    header = {"format": LEARNGENE_FORMAT, "config": cfg.to_dict(), **meta}
    _save_tensors(path, model.state_dict(), header)
    digest = sha256_file(path)
    sidecar = {
        **meta,
        "format": LEARNGENE_FORMAT,
        "config": cfg.to_dict(),
        "sha256": digest,
        "bytes": path.stat().st_size,
        "id": meta.get("id") or f"{meta.get('name', 'learngene')}-{digest[:12]}",
        "hidden_size": cfg.hidden_size,
        "head_dim": cfg.head_dim,
        "depth": cfg.depth,
        "rank": cfg.rank,
        "patch_size": cfg.patch_size,
        "image_size": cfg.image_size,
        "in_channels": cfg.in_channels,
        "num_classes": cfg.num_classes,
    }
    _write_json(directory / "config.json", sidecar)
    return sidecar


def read_learngene_metadata(path: str | Path) -> dict:
    """The sidecar config.json of a learngene file (header only when there is no sidecar)."""
    path = Path(path)
    sidecar = path.with_name("config.json")
    if sidecar.exists():
        return json.loads(sidecar.read_text())
    meta = read_metadata(path)
    if meta.get("format") != LEARNGENE_FORMAT:
        raise FormatError(f"{path}: not a learngene set (format {meta.get('format')!r})")
    return {k: maybe_json(v) for k, v in meta.items()}


def load_learngene(path: str | Path, expected_sha256: str | None = None) -> LearngeneSet:
    """Load and verify a learngene set (sha256 against the argument or the sidecar)."""
    path = Path(path)
    if path.is_dir():
        path = path / "learngene.safetensors"
    meta = read_learngene_metadata(path)
    if meta.get("format") != LEARNGENE_FORMAT:
        raise FormatError(f"{path}: not a learngene set (format {meta.get('format')!r})")
    want = expected_sha256 or meta.get("sha256")
    state = _load_tensors(path, want)
    try:
        cfg = DiTConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{path}: bad config in metadata ({e})") from None
    if not cfg.factored:
        raise FormatError(f"{path}: learngene config has no rank")
    model = DiT(cfg)
    _load_into(model, state, path)
    return LearngeneSet(model, meta, want or sha256_file(path))


# -- dense checkpoints ---------------------------------------------------------------------------
def save_dense(directory: str | Path, model: DiT, meta: dict) -> dict:
    """Write model.safetensors + config.json for a dense model (materialising a factored one)."""
    if model.genes is not None:
        model = model.materialize()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.safetensors"
    header = {"format": DENSE_FORMAT, "config": model.cfg.to_dict(), "base_grid": model.base_grid, **meta}
    _save_tensors(path, model.state_dict(), header)
    config = {**header, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    _write_json(directory / "config.json", config)
    return config


def load_dense(directory: str | Path, verify: bool = True) -> tuple[DiT, dict]:
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise FormatError(f"{directory}: no config.json (not a dense checkpoint directory)")
    config = json.loads(cfg_path.read_text())
    if config.get("format") != DENSE_FORMAT:
        raise FormatError(f"{cfg_path}: not a dense checkpoint (format {config.get('format')!r})")
    path = directory / "model.safetensors"
    state = _load_tensors(path, config.get("sha256") if verify else None)
    model = DiT(DiTConfig.from_dict(config["config"]), base_grid=config.get("base_grid"))
    _load_into(model, state, path)
    return model, config


# -- factored checkpoints ------------------------------------------------------------------------
def save_factored(path: str | Path, model: DiT, learngene: LearngeneSet, meta: dict) -> dict:
    """Everything of a factored descendant except its learngenes, plus a reference to them."""
    if model.genes is None:
        raise FormatError("only a learngene-backed model can be saved factored")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v for k, v in model.state_dict().items() if not k.startswith("genes.")}
    header = {
        "format": FACTORED_FORMAT,
        "config": model.cfg.to_dict(),
        "base_grid": model.base_grid,
        "learngene_id": learngene.id,
        "learngene_sha256": learngene.sha256,
        **meta,
    }
    _save_tensors(path, tensors, header)
    return {**header, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def load_factored(path: str | Path, learngene: LearngeneSet) -> tuple[DiT, dict]:
    """Rebuild the factored descendant from its file and its (verified) learngene set."""
    path = Path(path)
    meta = {k: maybe_json(v) for k, v in read_metadata(path).items()}
    if meta.get("format") != FACTORED_FORMAT:
        raise FormatError(f"{path}: not a factored checkpoint (format {meta.get('format')!r})")
    if meta.get("learngene_sha256") != learngene.sha256:
        raise FormatError(
            f"{path}: made from learngene {meta.get('learngene_id')} "
            f"(sha256 {str(meta.get('learngene_sha256'))[:12]}…), not {learngene.id} ({learngene.sha256[:12]}…)"
        )
    cfg = DiTConfig.from_dict(meta["config"])
    state = _load_tensors(path, None)
    anc = learngene.model
    for k, v in anc.state_dict().items():
        if k.startswith("genes."):
            state[k] = slice_tensor(k, v, anc.cfg, cfg.hidden_size).clone()
    model = DiT(cfg, base_grid=int(meta.get("base_grid") or cfg.grid_size))
    _load_into(model, state, path)
    return model, meta
