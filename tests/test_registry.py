"""The model registry: named oracles with their documented parameters, custom gmm/box leaves,
registered models, caching, and the errors for unknown names."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import rrrdsl
from rrrdsl import schedules
from rrrdsl.errors import InvalidValueError, UnknownNameError
from rrrdsl.lang.ir import box, classifier, gmm, model, oracle
from rrrdsl.models import registry
from rrrdsl.models.base import Model
from rrrdsl.models.oracles import Box, GaussianMixture
from rrrdsl.models.registry import list_models, register_model, resolve

F64 = torch.float64
NAMES = ["ring", "ring_left", "ring_right", "bar", "bar_h", "left_bar", "right_bar", "box", "box_small", "gauss"]


@pytest.fixture
def isolated_registry(monkeypatch):
    """Fresh tables for registered models and the cache, restored after the test; the zoo
    counts as loaded, so that it does not fill them."""
    monkeypatch.setattr(registry, "_REGISTERED", {kind: {} for kind in registry._REGISTERED})
    monkeypatch.setattr(registry, "_CACHE", {})
    monkeypatch.setattr(registry, "_zoo_loaded", True)


def ring_means(ks):
    return torch.tensor([[0.5 * math.cos(2 * math.pi * k / 8), 0.5 * math.sin(2 * math.pi * k / 8)] for k in ks], dtype=F64)


@pytest.mark.parametrize("name,ks", [("ring", range(8)), ("ring_left", range(4)), ("ring_right", range(4, 8))])
def test_rings_have_documented_parameters(name, ks):
    m = resolve(oracle(name))
    assert isinstance(m, GaussianMixture)
    torch.testing.assert_close(m.means, ring_means(ks))
    torch.testing.assert_close(m.std, torch.full((len(ks), 2), 0.03, dtype=F64))
    torch.testing.assert_close(m.weights, torch.full((len(ks),), 1 / len(ks), dtype=F64))


@pytest.mark.parametrize(
    "name,low,high",
    [
        ("bar", [-0.2, -1.0], [0.2, 1.0]),
        ("bar_h", [-1.0, -0.2], [1.0, 0.2]),
        ("left_bar", [-0.3, -1.0], [-0.1, 1.0]),
        ("right_bar", [0.1, -1.0], [0.3, 1.0]),
        ("box", [-0.7, -0.7], [0.7, 0.7]),
        ("box_small", [-0.3, -0.3], [0.3, 0.3]),
    ],
)
def test_boxes_have_documented_parameters(name, low, high):
    m = resolve(oracle(name))
    assert isinstance(m, Box)
    torch.testing.assert_close(m.low, torch.tensor(low, dtype=F64))
    torch.testing.assert_close(m.high, torch.tensor(high, dtype=F64))


def test_gauss_has_documented_parameters():
    m = resolve(oracle("gauss"))
    torch.testing.assert_close(m.means, torch.zeros(1, 2, dtype=F64))
    torch.testing.assert_close(m.std, torch.full((1, 2), 0.5, dtype=F64))


@pytest.mark.parametrize("name", NAMES)
def test_named_oracles_are_2d_normalised_on_the_default_schedule(name):
    m = resolve(oracle(name))
    assert m.dim == 2 and m.is_normalized and m.has_energy
    assert m.schedule == schedules.default() and m.schedule.kind == "cosine" and m.schedule.num_levels == 100
    assert m.description == f'oracle("{name}")'
    x = m.sample(8, torch.Generator().manual_seed(0), t=3)
    assert torch.isfinite(m.log_prob(x, 3)).all() and torch.isfinite(m.score(x, 3)).all()


def test_resolving_twice_returns_the_same_object_per_schedule():
    linear = schedules.linear(50)
    a = resolve(oracle("ring"))
    assert resolve(oracle("ring")) is a
    assert resolve(oracle("ring"), schedules.default()) is a
    b = resolve(oracle("ring"), linear)
    assert b is not a and b.schedule == linear
    assert resolve(oracle("ring"), linear) is b


def test_custom_gmm_and_box_leaves():
    leaf = gmm([[0, 0, 1], [1, 1, 0]], std=[0.1, 0.2], weights=[1, 3])
    g = resolve(leaf)
    assert isinstance(g, GaussianMixture) and g.dim == 3 and resolve(leaf) is g
    torch.testing.assert_close(g.weights, torch.tensor([0.25, 0.75], dtype=F64))
    torch.testing.assert_close(g.std, torch.tensor([[0.1] * 3, [0.2] * 3], dtype=F64))
    assert g.description == str(leaf)
    diag = resolve(gmm([[0, 0]], std=[[0.1, 0.3]]))
    torch.testing.assert_close(diag.std, torch.tensor([[0.1, 0.3]], dtype=F64))
    b = resolve(box([0, 0, 0, 0], [1, 2, 3, 4]))
    assert isinstance(b, Box) and b.dim == 4
    torch.testing.assert_close(b.high, torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64))


def test_unknown_oracle_suggests_near_names():
    with pytest.raises(UnknownNameError, match="unknown oracle 'rnig'") as err:
        resolve(oracle("rnig"))
    assert "did you mean 'ring'" in str(err.value)
    with pytest.raises(UnknownNameError, match="known oracles: bar, bar_h"):
        resolve(oracle("zzzz"))


def test_model_ring_points_to_the_exact_oracle(isolated_registry):
    with pytest.raises(UnknownNameError, match="unknown model 'ring'") as err:
        resolve(model("ring"))
    assert 'use oracle("ring") for the exact model' in str(err.value)
    assert "register_model" in str(err.value)


def test_unknown_classifier(isolated_registry):
    with pytest.raises(UnknownNameError, match="unknown classifier 'digits'") as err:
        resolve(classifier("digits", label=3))
    assert "no classifiers are registered" in str(err.value)


def test_register_model_and_resolve_with_condition(isolated_registry):
    calls = []

    def factory(schedule, **condition):
        calls.append((schedule, condition))
        return GaussianMixture([[float(condition.get("label", 0)), 0.0]], 0.5, schedule=schedule)

    register_model("mine", factory, "a test model")
    m3 = resolve(model("mine", label=3))
    assert isinstance(m3, Model) and m3.means[0, 0].item() == 3.0
    assert resolve(model("mine", label=3)) is m3 and len(calls) == 1
    assert calls[0] == (None, {"label": 3})
    assert resolve(model("mine")).means[0, 0].item() == 0.0
    assert list_models()['model("mine")'] == "a test model"
    # a near miss now suggests the registered name
    with pytest.raises(UnknownNameError, match="did you mean 'mine'"):
        resolve(model("mien"))
    # registering again replaces the entry and drops cached models
    register_model("mine", lambda schedule, **c: GaussianMixture([[9.0, 9.0]], 1.0), "replaced")
    assert resolve(model("mine", label=3)).means[0, 0].item() == 9.0


def test_register_a_model_instance(isolated_registry):
    instance = GaussianMixture([[1.0, 2.0]], 0.5)
    register_model("inst", instance)
    assert resolve(model("inst")) is instance and list_models()['model("inst")'] == ""
    with pytest.raises(UnknownNameError, match="model\\('inst'\\) takes no argument 'label'"):
        resolve(model("inst", label=1))


def test_register_classifier_and_bad_registrations(isolated_registry):
    register_model("clf", lambda schedule, **c: Box([0.0], [1.0]), "a classifier", kind="classifier")
    assert isinstance(resolve(classifier("clf", label=1)), Box)
    assert 'classifier("clf")' in list_models()
    with pytest.raises(InvalidValueError, match="kind"):
        register_model("x", lambda s: None, "bad kind", kind="oracle")
    with pytest.raises(InvalidValueError, match="callable"):
        register_model("x", "not a function", "bad factory")
    register_model("broken", lambda schedule, **c: "not a model", "returns a string")
    with pytest.raises(InvalidValueError, match="not a Model"):
        resolve(model("broken"))


def test_list_models_lists_every_named_oracle_with_a_description():
    listed = rrrdsl.list_models()
    for name in NAMES:
        assert listed[f'oracle("{name}")']
        assert "\n" not in listed[f'oracle("{name}")']
    assert rrrdsl.register_model is register_model


def run_fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing of rrrdsl imported yet); its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_oracles_compile_without_the_zoo_and_learned_names_load_it():
    """Parsing and compiling oracles imports no module of rrrdsl.zoo (nor rrrdsl.models any
    network code); the first model("ring") loads the zoo, which registers its names."""
    out = run_fresh(
        "import sys\n"
        "import rrrdsl\n"
        "from rrrdsl.models import registry\n"
        "target = rrrdsl.compile(rrrdsl.parse_expr('oracle(\"ring\") * oracle(\"bar\")'))\n"
        "target.log_prob_and_grad(__import__('torch').zeros(3, 2), 5)\n"
        "print(sorted(m for m in sys.modules if m.startswith('rrrdsl.zoo') or m == 'rrrdsl.zoo'))\n"
        "m = registry.resolve(rrrdsl.model('ring'))\n"
        "print(type(m).__module__, 'rrrdsl.zoo' in sys.modules)\n"
    )
    assert out.splitlines() == ["[]", "rrrdsl.zoo.toy2d.models True"]


def test_unknown_model_suggests_zoo_names_in_a_fresh_process():
    out = run_fresh(
        "import rrrdsl\n"
        "from rrrdsl.models import registry\n"
        "for expr in (rrrdsl.model('rnig'), rrrdsl.classifier('digts', label=3)):\n"
        "    try:\n"
        "        registry.resolve(expr)\n"
        "    except rrrdsl.UnknownNameError as error:\n"
        "        print(error)\n"
    )
    assert "unknown model 'rnig'" in out and "did you mean 'ring'" in out
    assert "unknown classifier 'digts'" in out and "did you mean 'digits'" in out


def test_list_models_lists_the_zoo():
    listed = rrrdsl.list_models()
    assert 'model("ring")' in listed and 'model("digits")' in listed and 'classifier("digits")' in listed


def test_judges_are_called_for_the_graphs_of_their_models_only(monkeypatch):
    monkeypatch.setattr(registry, "_JUDGES", {})
    seen = []
    registry.register_judge("a", lambda expr, x: seen.append(expr) or [f"a judged {len(x)}"])
    x = torch.zeros(3, 2)
    assert registry.judge(model("a", label=1) * model("a") * model("b"), x) == ["a judged 3"] and len(seen) == 1
    assert registry.judge(model("b"), x) == []
    with pytest.raises(InvalidValueError, match="the judge of model\\('a'\\) must be callable, got int"):
        registry.register_judge("a", 3)
