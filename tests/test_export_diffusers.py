"""A dense DiT exported by fine.export_diffusers loads in diffusers' DiTTransformer2DModel and
computes the same function (to float32 rounding)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fine.config import DiTConfig
from fine.export_diffusers import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    diffusers_config,
    export_diffusers,
    to_diffusers_state_dict,
)
from fine.formats import save_dense
from fine.model import DiT

ATOL = 1e-5

CASES = {
    # 28x28 grayscale, 7x7 token grid, 2 heads
    "gray28": DiTConfig(image_size=28, patch_size=4, in_channels=1, depth=2, hidden_size=64, head_dim=32),
    # 8x8 RGB, 4x4 token grid, 3 heads, 5 classes
    "rgb8": DiTConfig(
        image_size=8, patch_size=2, in_channels=3, depth=2, hidden_size=96, head_dim=32, num_classes=5
    ),
}


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine's cores are shared with training runs: keep the tests light.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def DiTTransformer2DModel():  # noqa: N802 - stands for the class
    diffusers = pytest.importorskip(
        "diffusers", reason="diffusers is not installed (pip install diffusers): cannot load the export"
    )
    return diffusers.DiTTransformer2DModel


def random_dit(cfg: DiTConfig, seed: int = 0) -> DiT:
    """A DiT with EVERY parameter random (adaLN-Zero and the final layer start at zero, which
    would make most of the comparison vacuous)."""
    g = torch.Generator().manual_seed(seed)
    model = DiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def batch(cfg: DiTConfig, n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.tensor([0, 17, 500, 999])[:n]
    y = torch.randint(0, cfg.num_classes, (n,), generator=g)
    y[-1] = cfg.num_classes  # the null (classifier-free guidance) label
    return x, t, y


def export(tmp_path: Path, cfg: DiTConfig) -> tuple[DiT, Path]:
    model = random_dit(cfg)
    dense_dir = tmp_path / "dense"
    save_dense(dense_dir, model, {"method": "scratch", "steps": 0})
    out = export_diffusers(dense_dir, tmp_path / "diffusers")
    return model, out


@pytest.mark.parametrize("case", sorted(CASES))
def test_diffusers_output_matches(tmp_path, DiTTransformer2DModel, case):  # noqa: N803
    cfg = CASES[case]
    model, out = export(tmp_path, cfg)
    assert out == tmp_path / "diffusers"
    theirs = DiTTransformer2DModel.from_pretrained(out).eval()
    x, t, y = batch(cfg)
    with torch.no_grad():
        expected = model(x, t, y)
        got = theirs(hidden_states=x, timestep=t, class_labels=y).sample
    assert got.shape == expected.shape == x.shape
    assert expected.abs().max() > 0.1  # not a vacuous comparison
    diff = (got - expected).abs().max().item()
    assert diff <= ATOL, f"{case}: max abs difference {diff:.3g} between fine-zoo and diffusers"


@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_keys_are_exactly_diffusers(tmp_path, DiTTransformer2DModel, case):  # noqa: N803
    cfg = CASES[case]
    _, out = export(tmp_path, cfg)
    _, info = DiTTransformer2DModel.from_pretrained(out, low_cpu_mem_usage=False, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert info["mismatched_keys"] == [] and info["error_msgs"] == []
    # And independently of the loader's bookkeeping: the same names and shapes as a fresh model.
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["_class_name"] == "DiTTransformer2DModel"
    fresh = DiTTransformer2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    with safe_open(str(out / WEIGHTS_NAME), framework="pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        assert f.metadata()["format"] == "pt"
    assert have == want


def test_factored_model_exports_its_materialised_weights():
    cfg = CASES["gray28"].replace(rank=8)
    model = random_dit(cfg)
    got = to_diffusers_state_dict(model)
    want = to_diffusers_state_dict(model.materialize())
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_shared_embedders_are_copied_into_every_block():
    cfg = CASES["gray28"]
    model = random_dit(cfg)
    state = to_diffusers_state_dict(model)
    table = model.y_embedder.embedding_table.weight
    for i in range(cfg.depth):
        emb = f"transformer_blocks.{i}.norm1.emb"
        assert torch.equal(state[f"{emb}.class_embedder.embedding_table.weight"], table)
        assert torch.equal(state[f"{emb}.timestep_embedder.linear_2.bias"], model.t_embedder.mlp[2].bias)
    q = state["transformer_blocks.1.attn1.to_q.weight"]
    v = state["transformer_blocks.1.attn1.to_v.bias"]
    d = cfg.hidden_size
    assert torch.equal(q, model.blocks[1].attn.qkv.weight[:d])
    assert torch.equal(v, model.blocks[1].attn.qkv.bias[2 * d :])


def test_config_matches_architecture():
    cfg = CASES["rgb8"]
    conf = diffusers_config(cfg)
    assert conf["num_attention_heads"] * conf["attention_head_dim"] == cfg.hidden_size
    assert (conf["in_channels"], conf["out_channels"]) == (3, 3)
    assert (conf["num_layers"], conf["sample_size"], conf["patch_size"]) == (2, 8, 2)
    assert conf["num_embeds_ada_norm"] == 5
    assert conf["norm_type"] == "ada_norm_zero" and conf["norm_eps"] == 1e-6


def test_descendant_on_another_grid_is_refused(tmp_path):
    cfg = CASES["gray28"].replace(image_size=32)  # 8x8 grid, evaluated on a 7x7 base grid
    model = DiT(cfg, base_grid=7)
    with pytest.raises(ValueError, match="position embedding"):
        to_diffusers_state_dict(model)
    save_dense(tmp_path / "dense", model, {})
    with pytest.raises(ValueError, match="base grid"):
        export_diffusers(tmp_path / "dense")
    assert not (tmp_path / "dense" / "diffusers" / WEIGHTS_NAME).exists()


@pytest.mark.parametrize("change", [{"freq_dim": 128}, {"mlp_ratio": 2}])
def test_architectures_diffusers_cannot_express_are_refused(change):
    model = DiT(CASES["gray28"].replace(**change))
    with pytest.raises(ValueError, match=next(iter(change))):
        to_diffusers_state_dict(model)


def test_library_does_not_import_diffusers():
    code = "import sys, fine.export_diffusers; assert 'diffusers' not in sys.modules"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
