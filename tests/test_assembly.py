import pytest
import torch
from conftest import batch, randomize_

from fine.assembly import assemble, evenly_spaced_layers, interpolate_layers, linear_fit_layers, truncate_rank
from fine.config import DiTConfig
from fine.model import DiT
from fine.width import hidden_index, slice_state

ANC = DiTConfig(depth=4, hidden_size=128, head_dim=32, rank=64)


@pytest.fixture(scope="module")
def ancestry() -> DiT:
    return randomize_(DiT(ANC), seed=1).eval()


def test_fine_at_own_size_reproduces_the_ancestry_exactly(ancestry: DiT) -> None:
    desc = assemble(ancestry, ANC.depth, ANC.hidden_size, "fine").eval()
    for k, v in ancestry.state_dict().items():
        assert torch.equal(v, desc.state_dict()[k]), k
    x, t, y = batch(ANC)
    assert torch.equal(ancestry(x, t, y), desc(x, t, y))


def test_weight_selection_at_own_size_is_the_materialized_ancestry(ancestry: DiT) -> None:
    desc = assemble(ancestry, ANC.depth, ANC.hidden_size, "weight-selection").eval()
    assert desc.genes is None
    x, t, y = batch(ANC)
    torch.testing.assert_close(desc(x, t, y), ancestry(x, t, y), atol=1e-5, rtol=1e-5)


def test_interpolation_over_relative_depth() -> None:
    stack = torch.tensor([[0.0], [1.0], [4.0]])
    assert torch.equal(interpolate_layers(stack, 3), stack)
    torch.testing.assert_close(interpolate_layers(stack, 5).flatten(), torch.tensor([0.0, 0.5, 1.0, 2.5, 4.0]))
    torch.testing.assert_close(interpolate_layers(stack, 1).flatten(), torch.tensor([1.0]))  # the middle layer
    torch.testing.assert_close(interpolate_layers(stack, 2).flatten(), torch.tensor([0.0, 4.0]))


def test_linear_fit_is_a_least_squares_line() -> None:
    stack = torch.tensor([[0.0], [1.0], [5.0]])  # best line: -0.5 + 2.5 x
    torch.testing.assert_close(linear_fit_layers(stack, 3).flatten(), torch.tensor([-0.5, 2.0, 4.5]))
    line = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    torch.testing.assert_close(linear_fit_layers(line, 7).flatten(), torch.linspace(1, 7, 7))


def test_weight_selection_picks_evenly_spaced_layers() -> None:
    assert evenly_spaced_layers(8, 4) == [0, 2, 5, 7]
    assert evenly_spaced_layers(8, 8) == list(range(8))
    assert evenly_spaced_layers(8, 1) == [4]  # round(3.5) -> 4


@pytest.mark.parametrize("method", ["fine", "linear-fit", "weight-selection", "scratch"])
@pytest.mark.parametrize(("depth", "width"), [(1, 32), (2, 64), (7, 96), (12, 128)])
def test_every_method_builds_every_size(ancestry: DiT, method: str, depth: int, width: int) -> None:
    desc = assemble(ancestry, depth, width, method).eval()
    assert desc.cfg.depth == depth and desc.cfg.hidden_size == width and desc.cfg.num_heads == width // 32
    x, t, y = batch(desc.cfg)
    out = desc(x, t, y)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_width_slicing_keeps_whole_heads(ancestry: DiT) -> None:
    width = 64
    desc = assemble(ancestry, ANC.depth, width, "weight-selection")
    full_qkv = ancestry.materialize().blocks[0].attn.qkv.weight
    got = desc.blocks[0].attn.qkv.weight  # (3 * 64, 64)
    hd = ANC.head_dim
    for chunk in range(3):  # q, k, v
        for head in range(width // hd):
            rows_new = slice(chunk * width + head * hd, chunk * width + (head + 1) * hd)
            rows_old = slice(chunk * ANC.hidden_size + head * hd, chunk * ANC.hidden_size + (head + 1) * hd)
            assert torch.equal(got[rows_new], full_qkv[rows_old, :width])
    with pytest.raises(ValueError, match="multiple of the head size 32"):
        assemble(ancestry, 2, 80, "fine")
    with pytest.raises(ValueError, match="the ancestry's width"):
        assemble(ancestry, 2, 160, "fine")


def test_adaLN_chunks_are_sliced_per_chunk() -> None:
    idx = hidden_index("chunk6", 128, 32, 4)
    assert idx.tolist() == [c * 128 + i for c in range(6) for i in range(32)]


def test_sliced_state_is_differentiable(ancestry: DiT) -> None:
    params = dict(ancestry.named_parameters())
    sliced = slice_state(params, ANC, 64)
    sliced["genes.fc1.U"].sum().backward()
    grad = params["genes.fc1.U"].grad
    assert grad is not None and grad[:256].eq(1).all() and grad[256:].eq(0).all()
    ancestry.zero_grad(set_to_none=True)


def test_other_image_size_and_channels(ancestry: DiT) -> None:
    desc = assemble(ancestry, 3, 64, "fine", image_size=32, in_channels=3, num_classes=5).eval()
    assert desc.cfg.grid_size == 8 and desc.base_grid == ANC.grid_size
    # The position function is the ancestry's, evaluated on the new grid's interpolated positions.
    assert torch.allclose(desc.pos_embed[0, 0], DiT(ANC.replace(hidden_size=64)).pos_embed[0, 0])
    x = torch.randn(2, 1, 32, 32)
    rgb = x.repeat(1, 3, 1, 1)
    gray_model = assemble(ancestry, 3, 64, "fine", image_size=32).eval()
    # A grey picture copied into three channels embeds exactly as the grey picture did.
    torch.testing.assert_close(desc.x_embedder(rgb), gray_model.x_embedder(x), atol=1e-5, rtol=1e-5)
    t, y = torch.tensor([10, 500]), torch.tensor([0, 4])
    out = desc(rgb, t, y)
    assert out.shape == rgb.shape
    # Every colour channel starts from the grey prediction.
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 0:1], gray_model(x, t, y), atol=1e-4, rtol=1e-4)
    assert desc.y_embedder.embedding_table.weight.shape == (6, 64)


def test_truncate_rank_keeps_the_strongest_components() -> None:
    anc = randomize_(DiT(DiTConfig(depth=3, hidden_size=64, rank=64)), scale=0.5).eval()
    x, t, y = batch(anc.cfg)
    assert torch.equal(truncate_rank(anc, 64).eval()(x, t, y), anc(x, t, y))
    with torch.no_grad():  # component 7 contributes nothing anywhere: cutting one component drops exactly it
        for b in anc.blocks:
            for lin in b.linears().values():
                lin.sigma[7] = 0.0
    cut = truncate_rank(anc, 63).eval()
    assert cut.cfg.rank == 63 and cut.genes["fc1"].U.shape == (256, 63)
    ref = anc(x, t, y)
    scale = ref.abs().max()
    assert (cut(x, t, y) - ref).abs().max() < 1e-5 * scale  # only summation order differs
    assert (truncate_rank(anc, 16).eval()(x, t, y) - ref).abs().max() > 1e-2 * scale
    with pytest.raises(ValueError, match="rank must be in"):
        truncate_rank(anc, 65)


def test_the_old_method_name_says_what_it_is_now() -> None:
    from fine.spec import JobSpec

    errors = dict(JobSpec(depth=2, hidden_size=64, dataset="fashion-mnist", method="tleg").errors())
    assert "'linear-fit'" in errors["method"] and "layer_form=linear" in errors["method"]
    assert "method" not in dict(JobSpec(depth=2, hidden_size=64, dataset="fashion-mnist", method="linear-fit").errors())
