"""Checkpoints: exact round trips, clear errors for bad files, registration as model("NAME")."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from rrrdsl import schedules
from rrrdsl.errors import CheckpointError, InvalidValueError, UnknownNameError
from rrrdsl.lang.ir import model as leaf
from rrrdsl.models.registry import resolve
from rrrdsl.zoo import checkpoints
from rrrdsl.zoo.toy2d import loading
from rrrdsl.zoo.toy2d.models import EnergyModel, ScoreModel
from rrrdsl.zoo.toy2d.train import ZOO, init_model

SCHEDULE = schedules.default()


def saved(tmp_path, name="ck", param="energy", seed=0):
    model = init_model(param, 2, SCHEDULE, width=16, depth=1, seed=seed)
    weights, meta = loading.save(model, tmp_path / f"{name}-{param}", data=name, steps=0, seed=seed)
    return model, weights, meta


@pytest.mark.parametrize("param", ["energy", "score"])
def test_round_trip_is_exact(tmp_path, param):
    model, weights, meta = saved(tmp_path, param=param)
    loaded = loading.load(weights)
    assert type(loaded) is type(model)
    original, restored = model.net.state_dict(), loaded.net.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.score(x, 40), model.score(x, 40))
    metadata = json.loads(meta.read_text())
    assert metadata["param"] == param and metadata["schedule"] == {"kind": "cosine", "num_levels": 100}
    assert (metadata["dim"], metadata["width"], metadata["depth"], metadata["name"]) == (2, 16, 1, "ck")
    assert metadata["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == [meta.name, weights.name]  # no temporary files left


def test_truncated_weights_name_the_file(tmp_path):
    _, weights, _ = saved(tmp_path)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(weights)):
        loading.load(weights)


def _rehash(meta, weights):
    metadata = json.loads(meta.read_text())
    metadata["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta.write_text(json.dumps(metadata))


def test_unreadable_weights_with_matching_hash(tmp_path):
    _, weights, meta = saved(tmp_path)
    weights.write_bytes(b"not a torch file at all")
    _rehash(meta, weights)
    with pytest.raises(CheckpointError, match=f"{weights}: not a readable torch"):
        loading.load(meta)


def test_foreign_state_dict_with_matching_hash(tmp_path):
    _, weights, meta = saved(tmp_path)
    torch.save({"linear.weight": torch.zeros(3, 3)}, weights)
    _rehash(meta, weights)
    with pytest.raises(CheckpointError, match=f"{weights}: weights do not fit"):
        loading.load(weights)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not a JSON"),
        ('{"some": "other tool"}', "not an rrrdsl checkpoint"),
        ('{"format": "rrrdsl-checkpoint", "version": 1}', "'name' is missing"),
    ],
)
def test_wrong_metadata_names_the_file(tmp_path, text, message):
    _, weights, meta = saved(tmp_path)
    meta.write_text(text)
    with pytest.raises(CheckpointError, match=message) as error:
        loading.load(weights)
    assert str(meta) in str(error.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"weights": "../ck-energy.pt"}, "is not a file name beside the metadata"),
        ({"weights": "/etc/passwd"}, "is not a file name beside the metadata"),
        ({"dim": True}, "'dim' is missing or not a int"),
        ({"schedule": {"kind": "cosine", "num_levels": 10**9}}, "num_levels': int in \\[2, 100000\\]"),
        ({"width": 10**6}, "network size 'width' must be a whole number in \\[1, 65536\\]"),
        ({"depth": 0}, "network size 'depth' must be a whole number"),
        ({"width": 4096, "depth": 64}, "weights do not fit a toy2d network of the metadata's sizes"),
    ],
)
def test_tampered_metadata_is_refused_before_anything_is_allocated(tmp_path, change, message):
    """The metadata lies outside the hash: paths must stay beside it, sizes are bounded and must
    match the weights' shapes (checked on the meta device) before the network is built."""
    _, weights, meta = saved(tmp_path)
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **change}))
    with pytest.raises(CheckpointError, match=message):
        loading.load(weights)


def test_non_finite_weights_are_never_written(tmp_path):
    model = init_model("energy", 2, SCHEDULE, width=16, depth=1)
    with torch.no_grad():
        next(model.net.parameters())[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite weights"):
        loading.save(model, tmp_path / "bad-energy")
    assert not list(tmp_path.iterdir())


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.json"):
        loading.load(tmp_path / "nothing.pt")
    _, weights, meta = saved(tmp_path)
    weights.unlink()
    with pytest.raises(CheckpointError, match=str(weights)):
        loading.load(meta)


def test_loaders_refuse_a_wrong_kind_and_a_hash_mismatch(tmp_path):
    from rrrdsl.zoo.digits import loading as digits_loading

    _, weights, meta = saved(tmp_path)
    assert json.loads(meta.read_text())["kind"] == "toy2d"
    with pytest.raises(CheckpointError, match=r"a 'toy2d' checkpoint, not 'digits-backbone'") as error:
        digits_loading.load_checkpoint(weights)
    assert str(meta) in str(error.value)
    metadata = json.loads(meta.read_text())
    meta.write_text(json.dumps({**metadata, "kind": "digits-backbone"}))
    with pytest.raises(CheckpointError, match=r"a 'digits-backbone' checkpoint, not 'toy2d'"):
        loading.load(weights)
    meta.write_text(json.dumps(metadata))
    altered = bytearray(weights.read_bytes())
    altered[-1] ^= 1
    weights.write_bytes(bytes(altered))
    with pytest.raises(CheckpointError, match=f"{weights}: sha256 of the weights does not match {meta.name}"):
        loading.load(weights)


def test_version_1_metadata_without_kind_loads_as_toy2d(tmp_path):
    model, weights, meta = saved(tmp_path)
    metadata = json.loads(meta.read_text())
    del metadata["kind"]
    meta.write_text(json.dumps({**metadata, "version": 1}))
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loading.load(weights).score(x, 40), model.score(x, 40))
    meta.write_text(json.dumps({**metadata, "version": 2}))
    with pytest.raises(CheckpointError, match="'kind' is missing"):
        loading.load(weights)


def test_other_schedule_is_rejected(tmp_path):
    _, weights, _ = saved(tmp_path)
    with pytest.raises(InvalidValueError, match="cosine"):
        loading.load(weights, schedule=schedules.linear(50))


def test_register_directory_resolves_both_parameterisations_lazily(tmp_path):
    saved(tmp_path, "ck_reg", "energy")
    _, score_weights, _ = saved(tmp_path, "ck_reg", "score", seed=1)
    score_weights.write_bytes(b"corrupted after registration")
    assert loading.register_directory(tmp_path) == ["ck_reg"]  # reads metadata only
    energy = resolve(leaf("ck_reg"))
    assert isinstance(energy, EnergyModel) and resolve(leaf("ck_reg")) is energy
    assert resolve(leaf("ck_reg", param="energy")) is energy
    with pytest.raises(CheckpointError, match="ck_reg-score.pt"):  # the weights load on first resolve
        resolve(leaf("ck_reg", param="score"))


def test_register_directory_errors(tmp_path):
    saved(tmp_path, "ck_err", "score")
    loading.register_directory(tmp_path)
    assert isinstance(resolve(leaf("ck_err", param="score")), ScoreModel)
    with pytest.raises(UnknownNameError, match="(?s)no .energy. checkpoint.*available: score"):
        resolve(leaf("ck_err"))
    with pytest.raises(UnknownNameError, match="did you mean 'param'"):
        resolve(leaf("ck_err", parm="score"))
    with pytest.raises(CheckpointError, match="not a directory"):
        loading.register_directory(tmp_path / "missing")


SHIPPED = [(name, param) for name, param in ZOO if checkpoints.checkpoint_paths(loading.SHIPPED_DIR / f"{name}-{param}")[1].exists()]


@pytest.mark.skipif(len(SHIPPED) < len(ZOO), reason="the shipped zoo is not trained yet (rrr train toy2d --zoo)")
def test_shipped_zoo_is_complete_small_and_registered():
    assert set(loading.register_shipped()) == {name for name, _ in ZOO}
    for name, param in ZOO:
        weights, meta = checkpoints.checkpoint_paths(loading.SHIPPED_DIR / f"{name}-{param}")
        assert weights.stat().st_size < 1_000_000
        metadata = loading.read_metadata(meta)
        assert (metadata["name"], metadata["data"], metadata["param"]) == (name, name, param)
        model = resolve(leaf(name, param=param))
        assert model.has_energy == (param == "energy")
    assert isinstance(resolve(leaf("ring")), EnergyModel)
    assert isinstance(resolve(leaf("ring", param="score")), ScoreModel)
