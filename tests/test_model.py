import pytest
import torch
from conftest import batch, randomize_

from fine.config import DiTConfig
from fine.model import DiT, FactoredLinear, Learngene


@pytest.mark.parametrize("channels", [1, 3])
def test_factored_and_materialized_outputs_match(channels: int) -> None:
    cfg = DiTConfig(depth=3, hidden_size=64, head_dim=32, rank=48, in_channels=channels)
    model = randomize_(DiT(cfg)).eval()
    dense = model.materialize().eval()
    assert dense.genes is None and all(isinstance(m, torch.nn.Linear) for m in dense.blocks[0].linears().values())
    x, t, y = batch(cfg)
    out_f, out_d = model(x, t, y), dense(x, t, y)
    assert out_f.abs().mean() > 1e-3  # not the trivial zero output of an untrained adaLN-Zero model
    torch.testing.assert_close(out_f, out_d, atol=1e-5, rtol=1e-5)


def test_factored_linear_paths_agree() -> None:
    gene = Learngene(96, 32, 16)
    torch.nn.init.normal_(gene.U)
    torch.nn.init.normal_(gene.V)
    lin = FactoredLinear(gene)
    torch.nn.init.normal_(lin.sigma)
    small = torch.randn(2, 32)  # few rows: the rank-r path
    big = torch.randn(4096, 32)  # many rows: the materialised path
    for x in (small, big):
        torch.testing.assert_close(lin(x), x @ lin.dense_weight().T + lin.bias, atol=1e-4, rtol=1e-4)


def test_learngenes_are_shared_not_copied() -> None:
    model = DiT(DiTConfig(depth=4, hidden_size=64, head_dim=32, rank=16))
    names = [k for k in model.state_dict() if k.startswith("genes.")]
    assert len(names) == 10
    assert all(b.attn.qkv.gene is model.genes["qkv"] for b in model.blocks)
    assert not any(".gene." in k for k in model.state_dict())


def test_zero_init_blocks_are_identity_and_output_is_zero() -> None:
    for rank in (None, 16):
        model = DiT(DiTConfig(depth=2, hidden_size=64, head_dim=32, rank=rank)).eval()
        x, t, y = batch(model.cfg)
        assert torch.count_nonzero(model(x, t, y)) == 0


def test_config_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="multiple of the head size"):
        DiTConfig(hidden_size=100, head_dim=32)
    with pytest.raises(ValueError, match="depth"):
        DiTConfig(depth=0)
