"""Sampler options: one checking helper with one wording, and each kernel's options dataclass
(defaults, ranges, target acceptance, annealed defaults) read by the entry point."""

import math
import re

import pytest

from rrrdsl.errors import SamplerError
from rrrdsl.samplers import options
from rrrdsl.samplers.api import DEFAULTS, KERNELS, SAMPLERS, _resolve_options, defaults
from rrrdsl.samplers.base import LAST_LEVELS
from rrrdsl.samplers.hmc import HMCOptions, UHAOptions
from rrrdsl.samplers.langevin import MALAOptions, ULAOptions
from rrrdsl.samplers.line_integral import TARGET_ACCEPT
from rrrdsl.samplers.nuts import NUTSOptions

#: the one wording of a bad option value
WORDING = re.compile(r"^option '\w+' must be .+, got .+$")


def message(error: pytest.ExceptionInfo) -> str:
    return str(error.value).splitlines()[0]


# --- the helper ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "check, expected",
    [
        (lambda: options.check_int("k", 0, 1), "option 'k' must be an integer >= 1, got 0"),
        (lambda: options.check_int("k", 16, 1, 15), "option 'k' must be an integer in 1..15, got 16"),
        (lambda: options.check_int("k", True, 0), "option 'k' must be an integer >= 0, got True"),
        (lambda: options.check_int("k", 2.0, 0), "option 'k' must be an integer >= 0, got 2.0"),
        (lambda: options.check_real("r", 1.0, 0, 1, closed=(True, False)), "option 'r' must be a number in [0, 1), got 1.0"),
        (lambda: options.check_real("r", -0.1, 0, 1), "option 'r' must be a number in [0, 1], got -0.1"),
        (lambda: options.check_real("r", 0.0, 0, closed=(False, True)), "option 'r' must be a finite number > 0, got 0.0"),
        (lambda: options.check_real("r", math.nan, 0, closed=(False, True)), "option 'r' must be a finite number > 0, got nan"),
        (lambda: options.check_real("r", math.inf), "option 'r' must be a finite number, got inf"),
        (lambda: options.check_real("r", False), "option 'r' must be a finite number, got False"),
        (lambda: options.check_real("r", "1"), "option 'r' must be a finite number, got '1'"),
        (lambda: options.check_choice("c", "ab", ("a", "b")), "option 'c' must be one of 'a' or 'b', got 'ab'"),
        (lambda: options.check_choice("c", 1, ("a", "b", None)), "option 'c' must be one of 'a', 'b' or None, got 1"),
    ],
)
def test_every_bad_value_has_the_one_wording(check, expected):
    with pytest.raises(SamplerError) as error:
        check()
    assert message(error) == expected and WORDING.match(message(error))


def test_good_values_pass_and_come_back():
    assert options.check_int("k", 15, 1, 15) == 15 and options.check_int("k", 0, 0) == 0
    assert options.check_real("r", 0, 0, 1, closed=(True, False)) == 0.0
    assert options.check_real("r", 1, 0, 1) == 1.0 and isinstance(options.check_real("r", 1, 0, 1), float)
    assert options.check_real("r", -3.5) == -3.5
    assert options.check_choice("c", None, ("a", None)) is None


def test_unknown_names_are_named_with_the_nearest():
    with pytest.raises(SamplerError, match="did you mean 'mh'") as error:
        options.check_choice("mh", "mhh", ("mh", "exact"))
    with pytest.raises(SamplerError) as error:
        options.check_known("sampler", "mlaa", SAMPLERS)
    assert message(error) == "unknown sampler 'mlaa'" and "did you mean 'mala'" in str(error.value)
    with pytest.raises(SamplerError) as error:
        options.check_names({"stpes": 1}, {"steps", "seed"}, "sampler 'mala'")
    assert message(error) == "unknown option 'stpes' for sampler 'mala'" and "did you mean 'steps'" in str(error.value)


# --- each kernel's options ---------------------------------------------------------------------


def test_kernel_options_defaults_and_target_acceptance():
    assert (ULAOptions().needs_energy, ULAOptions().target_accept) == (False, None)
    assert MALAOptions() == MALAOptions(mh="exact") and MALAOptions().target_accept == 0.57
    assert MALAOptions(mh="line_integral", points=2).target_accept == TARGET_ACCEPT == 0.9
    assert MALAOptions(mh="line_integral").target_accept == 0.57  # 3+ points: the exact test's target
    assert not MALAOptions(mh="line_integral").needs_energy
    assert UHAOptions() == UHAOptions(leapfrog=5, damping=0.0) and UHAOptions().target_accept is None
    assert HMCOptions() == HMCOptions(leapfrog=5, damping=0.0, mh="exact")
    assert (HMCOptions().target_accept, HMCOptions(mh="line_integral", points=2).target_accept) == (0.65, TARGET_ACCEPT)
    assert NUTSOptions().max_tree_depth == 10 and (NUTSOptions().needs_energy, NUTSOptions().target_accept) == (True, 0.8)
    assert isinstance(HMCOptions(damping=0).damping, float)
    with pytest.raises(AttributeError):
        HMCOptions().leapfrog = 3  # frozen


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: MALAOptions(mh="exakt"), "option 'mh' must be one of 'exact' or 'line_integral', got 'exakt'"),
        (lambda: HMCOptions(leapfrog=0), "option 'leapfrog' must be an integer >= 1, got 0"),
        (lambda: UHAOptions(leapfrog=2.5), "option 'leapfrog' must be an integer >= 1, got 2.5"),
        (lambda: HMCOptions(damping=1.0), "option 'damping' must be a number in [0, 1), got 1.0"),
        (lambda: UHAOptions(damping=-0.1), "option 'damping' must be a number in [0, 1), got -0.1"),
        (lambda: NUTSOptions(max_tree_depth=16), "option 'max_tree_depth' must be an integer in 1..15, got 16"),
        (lambda: NUTSOptions(max_tree_depth=True), "option 'max_tree_depth' must be an integer in 1..15, got True"),
    ],
)
def test_kernel_options_reject_bad_values(make, expected):
    with pytest.raises(SamplerError) as error:
        make()
    assert message(error) == expected


# --- the table the entry point reads -----------------------------------------------------------


def test_the_entry_point_reads_every_default_from_the_kernel_modules():
    # the per-sampler defaults, unchanged by the move into the kernel modules
    assert DEFAULTS == {
        "reverse": {"reverse": "ddpm"},
        "ddim": {"reverse": "ddim", "eta": 0.0},
        "ula": {"steps": 90, "mcmc_levels": (0, 9)},
        "mala": {"steps": 90, "mcmc_levels": (0, 9)},
        "hmc": {"steps": 90, "leapfrog": 1, "damping": 0.5, "mcmc_levels": (0, 9)},
        "uha": {"steps": 30, "leapfrog": 3, "mcmc_levels": (0, 9)},
        "nuts": {"steps": 20, "max_tree_depth": 3, "mcmc_levels": (0, 9)},
        "smc": {"kernel": "mala", "steps": 16, "reverse_levels": (10, 89), "levels": "adaptive", "ess": 0.8, "budget": 600, "oversample": 3, "pilot": 0},
    }
    assert LAST_LEVELS == (0, 9) and set(KERNELS) == {"ula", "mala", "hmc", "uha", "nuts"}
    step_schedule = {name: (k.annealed.step_scale, k.annealed.step_exponent) for name, k in KERNELS.items()}
    assert step_schedule == {"ula": (0.5, 1.0), "mala": (3.0, 1.0), "hmc": (1.0, 0.5), "uha": (1.0, 0.5), "nuts": (1.0, 0.5)}
    assert all(k.Options is type(k.annealed.kernel) for k in KERNELS.values())


def test_resolved_defaults_of_a_sampler():
    hmc = defaults("hmc")
    assert (hmc["steps"], hmc["leapfrog"], hmc["damping"], hmc["mh"], hmc["mcmc_levels"]) == (90, 1, 0.5, None, (0, 9))
    assert hmc["step_scale"] is None and hmc["eta"] == 1.0 and hmc["reverse"] == "ddpm" and hmc["adapt"] is True
    smc = defaults("smc")
    assert (smc["kernel"], smc["threshold"], smc["steps"], smc["mh"], smc["oversample"]) == ("mala", 0.5, 8, None, 3)
    # the walk over every level keeps its own steps per level; an explicit value wins over both
    assert _resolve_options("smc", {"levels": "schedule"})["steps"] == 16
    assert _resolve_options("smc", {"steps": 5})["steps"] == 5
    assert set(defaults("reverse")) == {"progress", "device", "dtype", "snapshots", "allow_nonfinite", "eta", "reverse"}
    with pytest.raises(SamplerError, match="unknown sampler"):
        defaults("hcm")
