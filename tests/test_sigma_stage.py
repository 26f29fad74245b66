import pytest
import torch

from fine.assembly import assemble
from fine.data import load
from fine.training import JobCanceled, OptimConfig, sigma_stage


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("train_bias", [False, True])
def test_only_sigma_and_biases_change(toy_learngene, train_bias: bool) -> None:
    model = assemble(toy_learngene.model, 2, 64, "fine")
    before = _snapshot(model)
    losses = sigma_stage(model, load("digits", "train"), 5, train_bias=train_bias,
                         optim=OptimConfig(lr=1e-2, warmup=1, batch_size=16))
    assert len(losses) == 5
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    sigmas = {k for k in before if k.endswith(".sigma")}
    biases = {k for k in before if k.startswith("blocks.") and k.endswith(".bias")}
    assert sigmas <= changed
    assert changed == (sigmas | biases if train_bias else sigmas)
    for k in before:
        if k.startswith("genes."):
            assert torch.equal(before[k], after[k])  # U and V bit-identical


def test_sigma_stage_stops_when_asked(toy_learngene) -> None:
    model = assemble(toy_learngene.model, 2, 64, "fine")
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(JobCanceled):
        sigma_stage(model, load("digits", "train"), 100, should_stop=stop, optim=OptimConfig(batch_size=16))
    assert len(calls) == 4


def test_sigma_stage_lowers_the_training_loss(toy_learngene) -> None:
    torch.manual_seed(0)
    model = assemble(toy_learngene.model, 3, 64, "fine")
    losses = sigma_stage(model, load("digits", "train"), 60, optim=OptimConfig(lr=1e-2, warmup=5, batch_size=64))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


def test_body_parts_train_at_their_own_rate_and_u_v_stay_frozen(toy_learngene) -> None:
    model = assemble(toy_learngene.model, 2, 64, "fine")
    before = _snapshot(model)
    sigma_stage(model, load("digits", "train"), 3, train_parts=("x_embedder", "final_layer"), parts_lr_scale=0.0,
                optim=OptimConfig(lr=1e-2, warmup=1, batch_size=16))
    after = model.state_dict()
    # A zero rate for the body group: the parts were given to the optimiser, at their own rate.
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("blocks."))
    sigma_stage(model, load("digits", "train"), 3, train_parts=("x_embedder", "final_layer"),
                optim=OptimConfig(lr=1e-2, warmup=1, batch_size=16))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"x_embedder.proj.weight", "final_layer.linear.weight"} <= changed
    assert not any(k.startswith(("genes.", "t_embedder.", "y_embedder.")) for k in changed)
    with pytest.raises(ValueError, match="unknown body parts"):
        sigma_stage(model, load("digits", "train"), 1, train_parts=("genes",))


def test_a_target_with_other_channels_trains_its_input_output_layers(toy_learngene, tmp_path, monkeypatch) -> None:
    from fine.assembly import assemble
    from fine.formats import load_factored
    from fine.pipeline import init_descendant
    from fine.spec import ADAPT_PARTS, JobSpec

    monkeypatch.setenv("FINE_CACHE_DIR", str(tmp_path / "cache"))
    spec = JobSpec(depth=2, hidden_size=64, dataset="colour-digits", sigma_steps=4, subset_size=64, eval_images=0,
                   batch_size=16, sample_steps=2)
    result = init_descendant(spec, learngene=toy_learngene, out_dir=tmp_path / "out")
    assert result.config["trained_body_parts"] == list(ADAPT_PARTS)
    trained, _ = load_factored(result.files["factored"], toy_learngene)
    start = assemble(toy_learngene.model, 2, 64, "fine", in_channels=3)
    for name in ("x_embedder.proj.weight", "final_layer.linear.weight"):
        assert not torch.equal(trained.state_dict()[name], start.state_dict()[name]), name
    assert torch.equal(trained.state_dict()["t_embedder.mlp.0.weight"], start.state_dict()["t_embedder.mlp.0.weight"])
    # The learngene's own geometry trains no body part.
    same = init_descendant(spec.model_copy(update={"dataset": "digits"}), learngene=toy_learngene,
                           out_dir=tmp_path / "grey")
    assert same.config["trained_body_parts"] == []
