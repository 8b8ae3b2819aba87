"""SMC's pilot walk (``pilot=P``): the main walk replays the path the pilot chose, within the
budget, and the option is checked before any work (its unbiasedness: ``tests/test_exactness.py``)."""

import math

import pytest

import rrrdsl
from rrrdsl.errors import SamplerError
from rrrdsl.samplers import pilot as pilot_module
from rrrdsl.samplers.levels import AdaptiveChoices
from rrrdsl.schedules import cosine


def short_ring_bar():
    return rrrdsl.compile(rrrdsl.oracle("ring") * rrrdsl.oracle("bar"), cosine(10))


def test_the_main_walk_replays_the_pilots_levels_and_step_sizes_within_the_budget(monkeypatch):
    made: list[AdaptiveChoices] = []

    class Recorded(AdaptiveChoices):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(pilot_module, "AdaptiveChoices", Recorded)
    result = rrrdsl.sample(short_ring_bar(), n=60, seed=3, steps=2, budget=100, oversample=1, pilot=40, snapshots=(4,), progress=False)
    (path,) = [choices.path for choices in made]  # one pilot walk
    levels = result.diagnostics["levels"]
    visited = [t for t in range(9, -1, -1) if not math.isnan(float(levels.ess[t]))]
    assert visited == path.levels and path.levels[0] == 9 and path.levels[-1] == 0 and 4 in visited
    for t, step_size in zip(path.levels[:-1], path.step_sizes):  # level 0's moves adapt (warm-up, then frozen)
        assert float(levels.step_size[t]) == pytest.approx(step_size)
    assert 90 <= result.diagnostics["nfe"] <= 100 and result.x.shape == (60, 2)
    assert set(result.diagnostics["snapshots"]) == {4}
    assert math.isfinite(result.diagnostics["pilot_log_z"]) and math.isfinite(result.diagnostics["log_z"])


def test_the_pilots_evaluations_come_out_of_the_budget():
    def final_moves(pilot: int) -> float:
        result = rrrdsl.sample(short_ring_bar(), n=60, seed=3, steps=2, budget=100, oversample=1, pilot=pilot, progress=False)
        assert result.diagnostics["nfe"] <= 100
        return float(result.diagnostics["levels"].nfe[0])

    small, large = final_moves(6), final_moves(60)
    assert large < small - 10  # a pilot walk as large as the main one costs about its walk: fewer moves at level 0


def test_without_a_pilot_no_pilot_log_z():
    result = rrrdsl.sample(short_ring_bar(), n=20, seed=0, steps=2, budget=40, progress=False)
    assert result.diagnostics["pilot_log_z"] is None and result.diagnostics["options"]["pilot"] == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pilot": -1}, "option 'pilot' must be an integer >= 0"),
        ({"pilot": 2.5}, "option 'pilot' must be an integer >= 0"),
        ({"levels": "schedule", "pilot": 100}, "option 'pilot' belongs to the adaptive walk"),
    ],
)
def test_the_pilot_option_is_checked_before_any_work(options, message, monkeypatch):
    monkeypatch.setattr("rrrdsl.samplers.api.normalise", lambda *args: pytest.fail("work started"))
    with pytest.raises(SamplerError, match=message):
        rrrdsl.sample(short_ring_bar(), "smc", n=4, progress=False, **options)


def test_a_pilot_larger_than_memory_is_refused(monkeypatch):
    from rrrdsl.samplers import api

    monkeypatch.setattr(api, "_device_memory", lambda device: 10**6)
    with pytest.raises(SamplerError, match="particles of dimension 2 need"):
        rrrdsl.sample(short_ring_bar(), "smc", n=4, pilot=10**6, progress=False)
