import json

import pytest
import torch
from conftest import batch, randomize_

from fine.assembly import assemble
from fine.formats import (
    FormatError,
    load_dense,
    load_factored,
    load_learngene,
    read_learngene_metadata,
    save_dense,
    save_factored,
)


def test_learngene_round_trip_is_bit_exact(toy_learngene_dir, toy_learngene) -> None:
    again = load_learngene(toy_learngene_dir / "learngene.safetensors")
    for k, v in toy_learngene.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])
    meta = read_learngene_metadata(toy_learngene_dir / "learngene.safetensors")
    assert meta["sha256"] == toy_learngene.sha256 and meta["hidden_size"] == 64 and meta["widths"] == [32, 64]


def test_dense_round_trip_and_metadata(tmp_path, toy_learngene) -> None:
    model = randomize_(assemble(toy_learngene.model, 2, 32, "fine")).eval()
    cfg = save_dense(tmp_path, model, {"dataset": "digits", "method": "fine", "metrics": {"heldout_loss": 0.5}})
    loaded, config = load_dense(tmp_path)
    dense = model.materialize()
    for k, v in dense.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert config["sha256"] == cfg["sha256"] and config["method"] == "fine"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        header = f.metadata()
    assert header["dataset"] == "digits" and json.loads(header["config"])["hidden_size"] == 32
    assert json.loads(header["metrics"]) == {"heldout_loss": 0.5}


def test_factored_round_trip(tmp_path, toy_learngene) -> None:
    model = randomize_(assemble(toy_learngene.model, 5, 32, "fine"), seed=3).eval()
    info = save_factored(tmp_path / "f.safetensors", model, toy_learngene, {"dataset": "digits"})
    again, meta = load_factored(tmp_path / "f.safetensors", toy_learngene)
    # randomize_ also moved the (sliced) learngenes, which a factored file does not carry: restore
    # them to the learngene's before comparing.
    x, t, y = batch(model.cfg)
    ref = assemble(toy_learngene.model, 5, 32, "fine")
    ref.load_state_dict({**model.state_dict(), **{k: v for k, v in ref.state_dict().items() if k.startswith("genes.")}})
    assert torch.equal(again.eval()(x, t, y), ref.eval()(x, t, y))
    assert meta["learngene_sha256"] == toy_learngene.sha256 and info["bytes"] > 0


def test_corrupted_learngene_is_refused(tmp_path, toy_learngene_dir) -> None:
    bad = tmp_path / "learngene"
    bad.mkdir()
    raw = bytearray((toy_learngene_dir / "learngene.safetensors").read_bytes())
    raw[-5] ^= 0xFF
    (bad / "learngene.safetensors").write_bytes(bytes(raw))
    (bad / "config.json").write_text((toy_learngene_dir / "config.json").read_text())
    with pytest.raises(FormatError, match="sha256 mismatch"):
        load_learngene(bad / "learngene.safetensors")


def test_truncated_dense_file_is_refused(tmp_path, toy_learngene) -> None:
    save_dense(tmp_path, assemble(toy_learngene.model, 2, 32, "scratch"), {})
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FormatError, match="sha256 mismatch"):
        load_dense(tmp_path)
    with pytest.raises(FormatError, match="not a readable safetensors"):
        load_dense(tmp_path, verify=False)


def test_mismatched_shapes_are_refused(tmp_path, toy_learngene) -> None:
    save_dense(tmp_path, assemble(toy_learngene.model, 2, 32, "scratch"), {})
    config = json.loads((tmp_path / "config.json").read_text())
    config["config"]["hidden_size"] = 64  # claims another width than the tensors have
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatError, match="shape"):
        load_dense(tmp_path)


def test_factored_file_refuses_another_learngene(tmp_path, toy_learngene) -> None:
    model = assemble(toy_learngene.model, 2, 32, "fine")
    save_factored(tmp_path / "f.safetensors", model, toy_learngene, {})
    toy_learngene.sha256 = "0" * 64
    with pytest.raises(FormatError, match="made from learngene"):
        load_factored(tmp_path / "f.safetensors", toy_learngene)
