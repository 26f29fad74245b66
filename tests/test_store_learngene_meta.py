"""Learngene metadata without torch: safetensors header and config.json sidecar."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from learngene_store.learngene_meta import LearngeneMetaError, read_metadata, read_safetensors_header

META = {"id": "lg-1", "hidden_size": 128, "head_dim": 32, "depth": 8, "rank": 16, "patch_size": 4,
        "image_size": 28, "in_channels": 1, "num_classes": 10, "source_dataset": "fashion-mnist", "steps": 100,
        "widths": [64, 128]}


def test_header_metadata(tmp_path: Path) -> None:
    p = tmp_path / "learngene.safetensors"
    save_file({"u": np.zeros((2, 2), np.float32)}, str(p), metadata={k: json.dumps(v) if not isinstance(v, str)
                                                                      else v for k, v in META.items()})
    meta = read_metadata(p)
    assert meta["hidden_size"] == 128 and meta["widths"] == [64, 128] and meta["id"] == "lg-1"


def test_sidecar_wins(tmp_path: Path) -> None:
    p = tmp_path / "learngene.safetensors"
    save_file({"u": np.zeros(2, np.float32)}, str(p))
    (tmp_path / "config.json").write_text(json.dumps({**META, "id": "from-sidecar"}))
    assert read_metadata(p)["id"] == "from-sidecar"


def test_missing_keys_and_garbage(tmp_path: Path) -> None:
    p = tmp_path / "learngene.safetensors"
    save_file({"u": np.zeros(2, np.float32)}, str(p))
    with pytest.raises(LearngeneMetaError, match="lacks"):
        read_metadata(p)
    g = tmp_path / "g.safetensors"
    g.write_bytes(struct.pack("<Q", 5) + b"nope!")
    with pytest.raises(LearngeneMetaError, match="not a safetensors"):
        read_safetensors_header(g)
    (tmp_path / "config.json").write_text(json.dumps({**META, "hidden_size": 100}))
    with pytest.raises(LearngeneMetaError, match="multiple of head_dim"):
        read_metadata(p)


@pytest.mark.parametrize("bad, message", [({"id": "x" * 129}, "'id' must be 1-128"), ({"id": "a/b"}, "'id' must"),
                                          ({"depth": 2**31}, "'depth' must be between 1 and 2147483647"),
                                          ({"source_dataset": "s" * 257}, "over 256 characters")])
def test_fields_fit_the_registry_columns(bad: dict, message: str) -> None:
    from learngene_store.learngene_meta import normalize

    with pytest.raises(LearngeneMetaError, match=message.replace("(", r"\(")):
        normalize({**META, **bad}, "x.safetensors")
