"""Digits: conditional batching, crop gradients, training, classifier normalisation, labels, checkpoints."""

from __future__ import annotations

import pytest
import torch

from rrrdsl import compile
from rrrdsl.errors import CompileError, InvalidValueError, UnknownNameError
from rrrdsl.lang.ir import box, classifier, crop, model
from rrrdsl.models import registry
from rrrdsl.models.base import ConditionalModel
from rrrdsl.zoo.digits import data, loading, train
from rrrdsl.zoo.digits.models import KINDS, NULL_LABEL, build
from rrrdsl.zoo.training import TrainConfig

pytest.importorskip("sklearn")


@pytest.fixture()
def tiny(monkeypatch):
    """Tiny untrained backbone and classifier standing in for the shipped ones."""
    torch.manual_seed(0)
    nets = {"backbone": build("backbone", width=16, depth=1), "classifier": build("classifier", width=16, depth=1)}
    monkeypatch.setattr(loading, "_LOADED", nets)
    loading.register()  # drop cached resolutions of the shipped networks
    yield nets
    loading.register()


def test_all_leaves_of_the_backbone_in_one_forward_pass(tiny):
    expr = model("digits", label=3) ** 2 / model("digits") * model("digits", label=7)
    target = compile(expr)
    x = torch.randn(5, 64)
    before = tiny["backbone"].calls
    log_prob, grad = target.log_prob_and_grad(x, 10)
    assert tiny["backbone"].calls - before == 1
    # the batched result equals the sum of the leaves evaluated one by one
    leaf = lambda label: ConditionalModel(tiny["backbone"], label)  # noqa: E731
    expected = 2 * leaf(3).log_prob(x, 10) - leaf(None).log_prob(x, 10) + leaf(7).log_prob(x, 10)
    torch.testing.assert_close(log_prob, expected, rtol=1e-4, atol=1e-4)
    expected_grad = 2 * leaf(3).score(x, 10) - leaf(None).score(x, 10) + leaf(7).score(x, 10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-4)


def test_score_is_per_condition_with_shared_points(tiny):
    backbone = tiny["backbone"]
    x = torch.randn(4, 64)
    scores = backbone.score(x, 3, [1, None])
    assert scores.shape == (2, 4, 64)
    torch.testing.assert_close(scores[1], backbone.score(x, 3, [None])[0])
    assert not torch.allclose(scores[0], scores[1])


def test_tapestry_crop_gradients_reach_the_canvas(tiny):
    windows = [(0, 8), (6, 14), (12, 20)]
    expr = crop(model("digits", label=1), rows=(0, 8), cols=windows[0])
    for label, cols in zip((2, 3), windows[1:]):
        expr = expr * crop(model("digits", label=label), rows=(0, 8), cols=cols)
    target = compile(expr, canvas=(8, 20))
    assert target.dim == 160
    x = torch.randn(3, 160, requires_grad=True)
    before = tiny["backbone"].calls
    log_prob, grad = target.log_prob_and_grad(x.detach(), 5)
    assert tiny["backbone"].calls - before == 1
    (autograd,) = torch.autograd.grad(target.log_prob(x, 5).sum(), x)
    torch.testing.assert_close(grad, autograd, rtol=1e-4, atol=1e-4)
    # every canvas column is covered, and the overlap columns 6, 7 get gradient from two windows
    columns = grad.reshape(3, 8, 20).abs().sum((0, 1))
    assert (columns > 0).all()
    # a window's gradient stays on it: beside an exact box on the other columns it is the
    # gradient of the model alone (alone on the wider canvas, columns 8.. would be improper)
    first = crop(model("digits", label=1), rows=(0, 8), cols=(0, 8))
    with pytest.raises(CompileError, match="not normalisable"):
        compile(first, canvas=(8, 20))
    rest = crop(box(low=[-1.0] * 96, high=[1.0] * 96), rows=(0, 8), cols=(8, 20))
    both = compile(first * rest, canvas=(8, 20)).log_prob_and_grad(x.detach(), 5)[1].reshape(3, 8, 20)
    alone = compile(first).log_prob_and_grad(x.detach().reshape(3, 8, 20)[..., :8].reshape(3, 64), 5)[1]
    assert alone.abs().sum() > 0
    torch.testing.assert_close(both[..., :8], alone.reshape(3, 8, 8))


def test_short_training_lowers_the_loss():
    x, y = data.load("train")
    config = TrainConfig(steps=60, batch_size=64, lr=3e-3, seed=0)
    losses = train.trainer("backbone", x, y, config).fit().losses
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    clf_losses = train.trainer("classifier", x, y, config).fit().losses
    assert sum(clf_losses[-10:]) / 10 < 0.8 * sum(clf_losses[:10]) / 10


def test_classifier_log_probs_normalise_over_labels(tiny):
    x = torch.randn(6, 64)
    log_p = tiny["classifier"].log_prob(x, torch.arange(6) * 10, list(range(10)))
    assert log_p.shape == (10, 6)
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(6))
    # a broken variant (dropping one label's probability mass) is rejected by the same check
    assert not torch.allclose(log_p[:9].exp().sum(0), torch.ones(6))


def test_label_validation(tiny):
    for bad in (10, -1, 2.5, "3", True):
        with pytest.raises(InvalidValueError, match="label must be an integer 0..9"):
            registry.resolve(model("digits", label=bad))
    with pytest.raises(UnknownNameError, match="did you mean"):
        registry.resolve(model("digits", lable=3))
    with pytest.raises(InvalidValueError, match="needs a label"):
        registry.resolve(classifier("digits"))
    assert registry.resolve(model("digits", label=3.0)).condition == 3


def test_shipped_checkpoints_load():
    for kind in KINDS:
        net = loading.load_checkpoint(loading.SHIPPED_DIR / f"digits-{kind}")
        assert sum(p.numel() for p in net.net.parameters()) > 0
    x, y = data.load("test")
    accuracy = (loading.shipped("evaluator").net.predict(x) == y).float().mean()
    assert accuracy > 0.85


def test_standard_normal_base_bounds_the_backbone_and_round_trips(tmp_path):
    """``log q_t = -E/σ_t - ½‖x‖² <= -½‖x‖²`` (E >= 0), so far points are improbable however the
    net extrapolates; the base is saved, and a version-1 checkpoint (no base) loads without it."""
    import json

    torch.manual_seed(0)
    backbone = build("backbone", width=16, depth=1)
    assert backbone.base == "standard_normal"
    far = 10 * torch.randn(64, 64)
    levels, labels = torch.zeros(64, dtype=torch.long), torch.full((64,), NULL_LABEL)
    with torch.no_grad():
        assert (backbone.log_density(far, levels, labels) <= -0.5 * far.square().sum(-1) + 1e-3).all()
    none = build("backbone", base="none", width=16, depth=1)
    none.net.load_state_dict(backbone.net.state_dict())
    x = torch.randn(8, 64)
    with torch.no_grad():
        difference = backbone.log_density(x, levels[:8], labels[:8]) - none.log_density(x, levels[:8], labels[:8])
    torch.testing.assert_close(difference, -0.5 * x.square().sum(-1))
    loading.save("backbone", backbone, tmp_path / "digits-backbone")
    assert loading.load_checkpoint(tmp_path / "digits-backbone").base == "standard_normal"
    meta_path = tmp_path / "digits-backbone.json"
    metadata = json.loads(meta_path.read_text())
    del metadata["base"]
    metadata["version"] = 1
    meta_path.write_text(json.dumps(metadata))
    assert loading.load_checkpoint(tmp_path / "digits-backbone").base == "none"
    with pytest.raises(InvalidValueError, match="base"):
        build("backbone", base="laplace")


def test_rrr_train_digits_writes_loadable_checkpoints(tmp_path, capsys):
    from rrrdsl.cli import main as rrr

    assert rrr(["train", "digits", "--steps", "6", "--out", str(tmp_path)]) == 0
    assert "evaluator_test_accuracy" in capsys.readouterr().out
    for kind in KINDS:
        assert loading.load_checkpoint(tmp_path / f"digits-{kind}").schedule == loading.shipped(kind).schedule
