"""Learngene-set metadata without torch: the `config.json` sidecar or the safetensors header.

A learngene set is `learngene.safetensors` with a `config.json` beside it holding at least
id, hidden_size, head_dim, depth, rank, patch_size, image_size, in_channels, num_classes,
source_dataset, steps and widths. The same keys may sit (as strings) in the safetensors
`__metadata__`, which is read from the 8-byte-length-prefixed JSON header only.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from fine.common import maybe_json

REQUIRED_INT = ("hidden_size", "head_dim", "depth", "rank", "patch_size", "image_size", "in_channels",
                "num_classes")
MAX_HEADER = 100 * 1024 * 1024


class LearngeneMetaError(ValueError):
    """The file is not a usable learngene set; the message says what is wrong."""


def read_safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise LearngeneMetaError(f"{path.name}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            raise LearngeneMetaError(f"{path.name}: safetensors header of {n} bytes is implausible")
        blob = f.read(n)
    try:
        header = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LearngeneMetaError(f"{path.name}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise LearngeneMetaError(f"{path.name}: not a safetensors file (header is not an object)")
    return header


MAX_INT = 2**31 - 1  # the registry's Integer columns
MAX_ID, MAX_SOURCE, MAX_WIDTHS = 128, 256, 64  # learngenes.id, learngenes.source_dataset, widths


def normalize(meta: dict[str, Any], name: str) -> dict[str, Any]:
    """Check and coerce the keys the registry needs; keep everything else as is."""
    out = dict(meta)
    missing = [k for k in (*REQUIRED_INT, "id") if k not in out]
    if missing:
        raise LearngeneMetaError(f"{name}: learngene metadata lacks {', '.join(missing)}")
    for k in (*REQUIRED_INT, "steps"):
        try:
            out[k] = int(out.get(k, 0))
        except (TypeError, ValueError):
            raise LearngeneMetaError(f"{name}: metadata {k!r} must be an integer, got {out[k]!r}") from None
    for k in (*REQUIRED_INT, "steps"):
        lo = 0 if k == "steps" else 1
        if not lo <= out[k] <= MAX_INT:
            raise LearngeneMetaError(f"{name}: metadata {k!r} must be between {lo} and {MAX_INT}, got {out[k]}")
    if out["hidden_size"] % out["head_dim"]:
        raise LearngeneMetaError(f"{name}: hidden_size {out['hidden_size']} is not a multiple of head_dim")
    widths = out.get("widths") or [out["hidden_size"]]
    if isinstance(widths, str):
        widths = json.loads(widths)
    out["widths"] = sorted({int(w) for w in widths})
    out["id"] = str(out["id"])
    out["source_dataset"] = str(out.get("source_dataset", "unknown"))
    if not 1 <= len(out["id"]) <= MAX_ID or any(c.isspace() or c in "/?#%" for c in out["id"]):
        raise LearngeneMetaError(f"{name}: metadata 'id' must be 1-{MAX_ID} characters without spaces or / ? # %, "
                                 f"got {out['id'][:40]!r}{'...' if len(out['id']) > 40 else ''}")
    if len(out["source_dataset"]) > MAX_SOURCE or len(out["widths"]) > MAX_WIDTHS:
        raise LearngeneMetaError(f"{name}: metadata 'source_dataset' is over {MAX_SOURCE} characters or 'widths' "
                                 f"lists over {MAX_WIDTHS} widths")
    return out


def header_metadata(header: dict[str, Any]) -> dict[str, Any]:
    """The `__metadata__` of a safetensors header, each value parsed back from JSON where it is JSON."""
    return {k: maybe_json(v) for k, v in (header.get("__metadata__") or {}).items()}


def read_metadata(path: Path) -> dict[str, Any]:
    """Metadata of a learngene file: sidecar `config.json` first, then the safetensors header."""
    meta = header_metadata(read_safetensors_header(path))
    sidecar = path.with_name("config.json")
    if sidecar.exists():
        meta.update(json.loads(sidecar.read_text()))
    return normalize(meta, path.name)
