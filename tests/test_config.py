"""SimConfig: validation, defaults, the Gaussian-latent twin and the JSON form (docs/model.md §3.2,
§6, §8.2, §8.3).

fastsgd/config.py:
1. validation of every field (§8.3's bounds at both edges, choices, combinations), with
   ConfigError's structured fields ``parameter``, ``allowed`` and ``value``; a property test over
   random configurations (§7.11), whose valid ones must also run;
2. count parsing (1e6, "1_000_000", integral floats; 1.5 refused);
3. DEFAULTS: the dataclass defaults and the table of §3.2;
4. gaussian_latent (the floor of §6) resets exactly LATENT_LAW_FIELDS and keeps the rest;
5. derived values, replace, and the JSON round trip (sorted keys, block_size as a number, explicit
   weights kept as given).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastsgd
from analysis.activations import ACTIVATIONS, FOLDS
from fastsgd.config import (DEFAULTS, LATENT_LAW_FIELDS, MAX_REAL, OMITTED_AT_DEFAULT,
                            PRECISIONS, ConfigError, SimConfig, canonical, gaussian_latent,
                            matched_twin, parse_count, standard_normal_twin)
from fastsgd.sampling import STANDARDIZATIONS, WEIGHT_SCHEMES
from fastsgd.sgd import INPUT_MODELS

MODEL_MD = Path(__file__).resolve().parent.parent / "docs" / "model.md"


# --------------------------------------------------------------------------------------------
# 1. Validation
# --------------------------------------------------------------------------------------------

#: docs/model.md §8.3: the closed ranges of the counts.
COUNT_RANGES = {
    "N": (1, 10 ** 7), "D": (1, 10 ** 7), "K": (1, 10 ** 4), "M": (1, 10 ** 4),
    "m": (1, 10 ** 4), "steps": (1, 10 ** 15), "seeds": (1, 10 ** 5), "records": (2, 10 ** 6),
    "test_size": (1, 10 ** 9), "blas_threads": (1, 1024), "seed": (0, 2 ** 63 - 1),
    "sample_seed": (0, 2 ** 63 - 1), "first_seed_index": (0, 2 ** 63 - 1 - 10 ** 5),
}


@pytest.mark.parametrize("field", list(COUNT_RANGES))
def test_count_ranges_are_closed_at_both_edges(field):
    low, high = COUNT_RANGES[field]
    for value in (low, high):
        assert getattr(SimConfig(**{field: value}), field) == value
    for value in (low - 1, high + 1):
        with pytest.raises(ConfigError) as info:
            SimConfig(**{field: value})
        error = info.value
        assert error.parameter == field
        assert error.allowed == f"an integer in [{low}, {high}]"
        assert error.value == value
        assert str(error) == f"{field} must be an integer in [{low}, {high}], got {value!r}"


#: docs/model.md §8.3: alpha ∈ [0, 10⁶], lr ∈ (0, 10⁶], sigma ∈ [0, 10⁶], all finite.
REAL_RANGES = {"alpha": (0.0, False), "lr": (0.0, True), "sigma": (0.0, False)}


@pytest.mark.parametrize("field", list(REAL_RANGES))
def test_real_ranges(field):
    low, open_low = REAL_RANGES[field]
    top = 1e6
    accepted = [top, np.nextafter(low, 1.0) if open_low else low, "0.5", 3]
    for value in accepted:
        assert getattr(SimConfig(**{field: value}), field) == float(value)
    refused = [np.nextafter(top, math.inf), np.nextafter(low, -1.0), math.nan, math.inf,
               -math.inf, "x", None, True]
    if open_low:
        refused.append(low)
    for value in refused:
        with pytest.raises(ConfigError) as info:
            SimConfig(**{field: value})
        error = info.value
        assert error.parameter == field, value
        assert "finite" in error.allowed and "1e+06" in error.allowed
        assert (">" if open_low else ">=") in error.allowed
        assert error.value is value


CHOICES = {"weights": WEIGHT_SCHEMES, "standardize": STANDARDIZATIONS, "f": FOLDS,
           "g": ACTIVATIONS, "precision": PRECISIONS, "input_model": INPUT_MODELS}


def test_choice_tuples_are_those_of_the_documentation():
    assert CHOICES == {"weights": ("uniform", "dirichlet"),
                       "standardize": ("none", "sample", "population", "whiten"),
                       "f": ("sign", "erf", "linear", "relu", "tanh"),
                       "g": ("erf", "relu", "linear"), "precision": ("f64", "mixed"),
                       "input_model": ("hmm", "equivalent_gaussian")}


@pytest.mark.parametrize("field", list(CHOICES))
def test_every_choice_is_accepted_and_anything_else_refused(field):
    for value in CHOICES[field]:
        assert getattr(SimConfig(**{field: value}), field) == value
    for value in (CHOICES[field][0].upper(), "", 3, None):
        with pytest.raises(ConfigError) as info:
            SimConfig(**{field: value})
        error = info.value
        if field == "weights" and not isinstance(value, str):
            continue  # a non-string weights is an explicit list: tested below
        assert error.parameter == field
        assert error.value == value
        assert error.allowed == "one of " + ", ".join(CHOICES[field])
        for choice in CHOICES[field]:
            assert choice in str(error)


def test_train_second_layer_must_be_a_bool():
    for value in (True, False):
        assert SimConfig(train_second_layer=value).train_second_layer is value
    for value in (1, 0, "yes", None, np.bool_(True)):
        with pytest.raises(ConfigError) as info:
            SimConfig(train_second_layer=value)
        assert info.value.parameter == "train_second_layer"
        assert info.value.value is value


@pytest.mark.parametrize("kwargs, parameter, value", [
    ({"D": 16, "block_size": 5}, "block_size", 5),
    ({"D": 16, "block_size": 32}, "block_size", 32),
    ({"D": 16, "block_size": 0}, "block_size", 0),
    ({"m": 2, "weights": (1.0,)}, "weights", (1.0,)),
    ({"m": 2, "weights": (1.0, -0.5)}, "weights", (1.0, -0.5)),
    ({"m": 2, "weights": (1.0, math.inf)}, "weights", (1.0, math.inf)),
    ({"m": 2, "weights": (True, 1.0)}, "weights", (True, 1.0)),
    ({"m": 2, "weights": (0.0, 0.0)}, "weights", (0.0, 0.0)),
    ({"m": 2, "weights": 7}, "weights", 7),
    ({"D": 1, "standardize": "sample"}, "standardize", None),
    ({"seeds": 2, "blas_threads": 2}, "blas_threads", None),
])
def test_combinations_name_their_parameter(kwargs, parameter, value):
    with pytest.raises(ConfigError) as info:
        SimConfig(**kwargs)
    error = info.value
    assert error.parameter == parameter
    assert error.value == value
    assert isinstance(error.allowed, str) and error.allowed
    assert "\n" not in str(error)


def test_block_size_error_lists_the_divisors_of_D():
    with pytest.raises(ConfigError) as info:
        SimConfig(D=12, block_size=5)
    assert info.value.allowed == "a divisor of D = 12 (1, 2, 3, 4, 6, 12)"
    assert str(info.value) == "block_size must be a divisor of D = 12 (1, 2, 3, 4, 6, 12), got 5"


def test_config_error_fields_without_a_value():
    error = ConfigError("x", "something")
    assert (error.parameter, error.allowed, error.value) == ("x", "something", None)
    assert str(error) == "x must be something"
    error = ConfigError("x", "something", None)
    assert str(error) == "x must be something, got None"
    assert str(ConfigError("x", "y", 3, message="custom")) == "custom"


# Property test (docs/model.md §7.11): random small configurations, one field possibly invalid.
BAD_COUNTS = [0, -1, 1.5, "x", None, True, float("nan"), 10 ** 16]
BAD_REALS = [-0.5, float("nan"), float("inf"), "a", None, MAX_REAL * 10]


FIELDS = [
    ("N", [1, 7, 24], BAD_COUNTS), ("D", [1, 4, 12], BAD_COUNTS),
    ("K", [1, 2, 3], BAD_COUNTS), ("M", [1, 2], BAD_COUNTS), ("m", [1, 2, 3], BAD_COUNTS),
    ("steps", [1, 50, "1e2", 300.0], BAD_COUNTS), ("seeds", [1, 2], BAD_COUNTS),
    ("records", [2, 5], [1, 0, 2.5]), ("test_size", [1, 30], BAD_COUNTS),
    ("seed", [0, 5], [-1, 1.5]), ("alpha", [0.0, 0.7, 3], BAD_REALS),
    ("lr", [0.05, 0.5, 40.0], [0, -0.1] + BAD_REALS), ("sigma", [0.0, 0.3], BAD_REALS),
    ("f", ["sign", "erf", "linear", "relu", "tanh"], ["Sign", "gelu", 3]),
    ("g", ["erf", "relu", "linear"], ["tanh", None]),
    ("standardize", ["none", "sample", "population", "whiten"], ["zscore", ""]),
    ("precision", ["f64", "mixed"], ["f32"]),
    ("input_model", ["hmm", "equivalent_gaussian"], ["gaussian"]),
    ("train_second_layer", [True, False], [1, "yes"]),
    ("weights", ["uniform", "dirichlet"], ["zipf", [], [-1.0], [0.0]]),
    ("block_size", [None, 1], [0, -2, 1.5]),
]


@st.composite
def configs(draw):
    """(kwargs, expected_valid): small valid values for a random subset of the fields, and in
    half of the examples exactly one field set to one of its refused values."""
    values = {}
    for name, valid, _ in FIELDS:
        if name in ("N", "D", "steps") or draw(st.booleans()):
            values[name] = draw(st.sampled_from(valid))
    ok = True
    if draw(st.booleans()):
        name, _, invalid = draw(st.sampled_from(FIELDS))
        values[name] = draw(st.sampled_from(invalid))
        ok = False
    D, m = values["D"], values.get("m", 1)
    if ok and draw(st.integers(0, 3)) == 0:  # combinations that only the pair can refuse
        kind = draw(st.sampled_from(["block", "weights", "sample"]))
        if kind == "block":
            values["block_size"] = draw(st.sampled_from([2, 3, 5]))
            ok = D % values["block_size"] == 0
        elif kind == "weights":
            values["weights"] = draw(st.lists(st.floats(0, 3), min_size=1, max_size=4))
            ok = len(values["weights"]) == m and sum(values["weights"]) > 0
        else:
            values["standardize"] = "sample"
            ok = D >= 2
    if ok and values.get("standardize") == "sample" and D == 1:
        ok = False
    return values, ok


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=configs())
def test_every_invalid_config_is_refused_and_every_valid_one_runs(case, tmp_path_factory):
    values, expected_valid = case
    if expected_valid:
        values = {**values, "test_size": min(values.get("test_size", 30), 30),
                  "seeds": values.get("seeds", 1)}
        cfg = fastsgd.SimConfig(**values)
        run = fastsgd.simulate(cfg, out=tmp_path_factory.mktemp("run") / "run.h5", threads=1)
        assert set(run.status) <= {"ok", "diverged"}
        for i, status in enumerate(run.status):
            n = int(run.n_records[i])
            assert np.all(np.isfinite(run.eg_mc[i, :n]))
            if status == "ok":
                assert n == len(run.step)
    else:
        with pytest.raises(fastsgd.ConfigError) as info:
            fastsgd.SimConfig(**values)
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# 2. Count parsing
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (1000, 1000), (1e3, 1000), ("1e3", 1000), ("1_000", 1000), (" 1000 ", 1000),
    (np.int64(7), 7), (np.float64(8.0), 8), ("-0", 0),
])
def test_parse_count_accepts(value, expected):
    got = parse_count(value, "n", 0, 10 ** 6)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value", [1.5, "1.5", "abc", "", True, False, None, math.nan, math.inf,
                                   "1e400", [3], 10 ** 6 + 1, -1])
def test_parse_count_refuses(value):
    with pytest.raises(ConfigError) as info:
        parse_count(value, "n", 0, 10 ** 6)
    assert info.value.parameter == "n"
    assert info.value.allowed == "an integer in [0, 1000000]"




# --------------------------------------------------------------------------------------------
# 3. Defaults
# --------------------------------------------------------------------------------------------

SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")


def documented_value(text: str):
    """A cell of the defaults table of docs/model.md §3.2 as a Python value."""
    text = re.sub(r"\s*\(.*\)$", "", text.strip())     # "10⁶ (t = 1000)", "None (= seed)"
    power = re.fullmatch(r"10([⁰¹²³⁴⁵⁶⁷⁸⁹]+)", text)
    if power:
        return 10 ** int(power.group(1).translate(SUPERSCRIPTS))
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    if text == "D":
        return None                                         # block_size: None means D
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def documented_defaults() -> dict:
    lines = MODEL_MD.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "**Defaults**" in line)
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            if rows:
                break
            continue
        if not line.strip().startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    table = {}
    for row in rows[2:]:                                    # after the header and the rule
        for names, values in zip(row[0::2], row[1::2]):
            if not names:
                continue
            parts = [n.strip() for n in names.split(",")]
            vals = [v.strip() for v in values.split(",")] if len(parts) > 1 else [values]
            assert len(parts) == len(vals), (names, values)
            for name, value in zip(parts, vals):
                table[name] = documented_value(value)
    return table


def test_defaults_are_the_dataclass_defaults():
    assert DEFAULTS == {f.name: f.default for f in dataclasses.fields(SimConfig)}
    cfg = SimConfig()
    for name, value in DEFAULTS.items():
        expected = cfg.D if name == "block_size" else value
        assert getattr(cfg, name) == expected, name


def test_defaults_match_the_table_of_the_documentation():
    """docs/model.md §3.2 lists every field of SimConfig with its default."""
    documented = documented_defaults()
    assert set(documented) == set(DEFAULTS)
    for name, value in DEFAULTS.items():
        assert documented[name] == value, (name, documented[name], value)




# --------------------------------------------------------------------------------------------
# 4. The Gaussian-latent twin (docs/model.md §6)
# --------------------------------------------------------------------------------------------

#: Every field away from its default (seeds > 1 and blas_threads > 1 exclude each other).
ALL_CHANGED = dict(N=40, D=20, K=3, M=1, m=3, alpha=1.5, block_size=4, weights=(1.0, 2.0, 3.0),
                   standardize="whiten", f="erf", g="relu", lr=0.1, train_second_layer=False,
                   steps=77, seeds=1, seed=9, records=5, test_size=33, precision="mixed",
                   sigma=0.2, sample_seed=4, input_model="equivalent_gaussian",
                   first_seed_index=3, blas_threads=2, means="scalar",
                   latent="matched_gaussian", teacher="aligned", moment_samples=5000,
                   center_inputs=False)   # True is refused with equivalent_gaussian: see below
#: The data-latent fields (§11) exclude the mixture's: tested in tests/test_latent_data.py.
DATA_FIELDS = ("latent_data", "latent_data_shape", "latent_data_sha256")


def test_latent_law_fields_are_those_of_the_documentation():
    assert LATENT_LAW_FIELDS == ("m", "alpha", "weights", "block_size", "standardize", "means",
                                 "latent", "moment_samples", *DATA_FIELDS)


@pytest.mark.parametrize("seeds, blas_threads", [(1, 2), (2, 1)])
def test_gaussian_latent_resets_exactly_the_latent_law(seeds, blas_threads):
    cfg = SimConfig(**{**ALL_CHANGED, "seeds": seeds, "blas_threads": blas_threads})
    assert set(ALL_CHANGED) | set(DATA_FIELDS) == set(DEFAULTS)
    for name in ALL_CHANGED:   # every field away from its default (seeds or blas_threads: one of)
        assert getattr(cfg, name) != DEFAULTS[name] or name in (
            "seeds", "blas_threads", "center_inputs"), name
    with pytest.raises(ConfigError) as info:   # an aligned teacher needs the mixture (§10.3)
        gaussian_latent(cfg)
    assert info.value.parameter == "teacher"
    cfg = cfg.replace(teacher="random")
    floor = gaussian_latent(cfg)
    for name in DEFAULTS:
        if name in LATENT_LAW_FIELDS:
            expected = cfg.D if name == "block_size" else DEFAULTS[name]
        else:
            expected = getattr(cfg, name)
        assert getattr(floor, name) == expected, name
    assert (floor.m, floor.alpha, floor.weights, floor.block_size, floor.standardize) == (
        1, 0.0, "uniform", 20, "none")
    # further changes apply after the reset, and a Gaussian config is its own twin
    assert gaussian_latent(cfg, sample_seed=8) == floor.replace(sample_seed=8)
    assert gaussian_latent(floor) == floor
    centred = cfg.replace(input_model="hmm", center_inputs=True)
    assert gaussian_latent(centred).center_inputs   # an input option, not the latent law's
    with pytest.raises(ConfigError):
        gaussian_latent(cfg, lr=0.0)




# --------------------------------------------------------------------------------------------
# 5. Derived values, replace and the JSON form
# --------------------------------------------------------------------------------------------

def test_derived_values():
    cfg = SimConfig(N=40, D=20, block_size=4, seeds=3, first_seed_index=7, seed=5)
    assert cfg.delta == 0.5 and cfg.n_blocks == 5
    assert cfg.sample_entropy == 5
    assert SimConfig(seed=5, sample_seed=0).sample_entropy == 0      # 0 is a sample_seed too
    assert SimConfig(seed=5, sample_seed=9).sample_entropy == 9
    assert cfg.seed_indices == range(7, 10)


def test_replace_validates_again_and_a_default_block_size_follows_D():
    default_block = SimConfig(D=16)
    assert default_block.replace(D=32).block_size == 32
    explicit = SimConfig(D=16, block_size=4)
    assert explicit.replace(D=32).block_size == 4
    assert SimConfig(D=16, block_size=16).replace(D=32).block_size == 32  # B = D reads as default
    with pytest.raises(ConfigError) as info:
        explicit.replace(D=18)
    assert info.value.parameter == "block_size"
    with pytest.raises(ConfigError) as info:
        explicit.replace(bogus=1)
    assert info.value.parameter == "bogus"


def test_json_form_has_sorted_keys_and_block_size_as_a_number():
    cfg = SimConfig(D=24, m=2, weights=[1, 3])
    data = cfg.to_dict()
    assert list(data) == [f.name for f in dataclasses.fields(SimConfig)]
    assert data["weights"] == [1.0, 3.0] and data["block_size"] == 24
    text = cfg.to_json()
    assert text == json.dumps({k: v for k, v in data.items() if k not in OMITTED_AT_DEFAULT},
                              sort_keys=True)
    assert json.loads(text)["block_size"] == 24
    assert cfg.weights == (1.0, 3.0)
    assert SimConfig.from_dict(data) == cfg


# --------------------------------------------------------------------------------------------
# 6. Counts, refusals and the JSON round trip through the public constructor
# --------------------------------------------------------------------------------------------

def test_simconfig_counts_accept_integral_floats_and_strings():
    cfg = SimConfig(steps=1e6, N="1_000", D="1e2", test_size=" 200 ", records=np.int64(7))
    assert (cfg.steps, cfg.N, cfg.D, cfg.test_size, cfg.records) == (1_000_000, 1000, 100, 200, 7)
    for name in ("steps", "N", "D", "test_size", "records"):
        assert type(getattr(cfg, name)) is int, name
    assert cfg.block_size == 100  # None means D
    assert SimConfig(seed="1e3", sample_seed=0.0).seed == 1000


@pytest.mark.parametrize("field,value", [
    ("steps", 1.5), ("steps", "1.5"), ("steps", True), ("N", True), ("K", False),
    ("steps", 0), ("steps", "abc"), ("steps", math.inf), ("steps", math.nan), ("steps", None),
    ("records", 1), ("seed", -1), ("seed", True), ("N", 10 ** 12), ("test_size", 0),
    ("alpha", -1.0), ("alpha", math.nan), ("alpha", math.inf), ("alpha", True),
    ("lr", 0.0), ("lr", -0.1), ("sigma", -1.0), ("sigma", math.inf),
    ("f", "foo"), ("g", "sign"), ("standardize", "Sample"), ("precision", "f32"),
    ("input_model", "gaussian"), ("weights", "foo"), ("train_second_layer", 1),
    ("blas_threads", 0), ("first_seed_index", -1), ("sample_seed", -2),
])
def test_simconfig_rejects(field, value):
    with pytest.raises(ConfigError) as info:
        SimConfig(**{field: value})
    assert field in str(info.value)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"D": 16, "block_size": 5}, "block_size"),
    ({"D": 1, "standardize": "sample"}, "sample"),
    ({"m": 2, "weights": (1.0,)}, "weights"),
    ({"m": 2, "weights": (1.0, -0.5)}, "weights"),
    ({"m": 2, "weights": (0.0, 0.0)}, "weights"),
    ({"m": 2, "weights": (1.0, math.nan)}, "weights"),
    ({"seeds": 2, "blas_threads": 2}, "blas_threads"),
])
def test_simconfig_rejects_combinations(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        SimConfig(**kwargs)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    assert fastsgd.ConfigError is ConfigError
    with pytest.raises(ValueError):
        SimConfig(lr=0)


def test_simconfig_is_frozen():
    cfg = SimConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.N = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 10
    assert cfg.N == 1000 and cfg.steps == 1_000_000


@pytest.mark.parametrize("kwargs", [
    {},
    {"N": 64, "D": 16, "K": 3, "M": 4, "m": 2, "alpha": 0.5, "block_size": 4,
     "weights": (1.0, 3.0), "standardize": "whiten", "f": "erf", "g": "relu", "lr": 0.05,
     "train_second_layer": False, "steps": "1e4", "seeds": 3, "seed": 7, "records": 20,
     "test_size": 500, "precision": "mixed", "sigma": 0.1, "sample_seed": 11,
     "input_model": "equivalent_gaussian", "first_seed_index": 2},
])
def test_simconfig_json_round_trip(kwargs):
    cfg = SimConfig(**kwargs)
    text = cfg.to_json()
    back = SimConfig.from_json(text)
    assert back == cfg
    assert back.to_json() == text
    assert json.loads(text)["steps"] == cfg.steps
    if "weights" in kwargs:  # kept as given (the sampler normalises by the sum)
        assert back.weights == (1.0, 3.0)


def test_simconfig_from_json_rejects_unknown_fields():
    data = json.loads(SimConfig().to_json())
    data["threads"] = 4
    with pytest.raises(ConfigError, match="threads"):
        SimConfig.from_json(json.dumps(data))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e3, allow_nan=False), min_size=2,
                max_size=6).filter(lambda w: sum(w) > 0))
def test_explicit_weights_survive_a_json_round_trip_exactly(weights):
    cfg = SimConfig(m=len(weights), alpha=1.0, weights=weights)
    assert SimConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("field, value", [("alpha", 1e7), ("lr", 1e7), ("sigma", 1e300)])
def test_absurd_reals_are_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        SimConfig(**{field: value})


def test_config_errors_survive_pickling_with_their_fields():
    """Dask and multiprocessing carry errors between processes by pickling them."""
    import pickle

    with pytest.raises(ConfigError) as info:
        SimConfig(D=12, block_size=5)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is ConfigError and str(copy) == str(info.value)
    assert (copy.parameter, copy.allowed, copy.value) == ("block_size", info.value.allowed, 5)


def test_gaussian_latent_takes_further_changes_even_of_latent_fields():
    from fastsgd.config import gaussian_latent

    cfg = SimConfig(m=3, alpha=1.0, standardize="whiten", D=12, block_size=4)
    twin = gaussian_latent(cfg, standardize="population", sample_seed=5)
    assert (twin.m, twin.alpha, twin.block_size, twin.standardize) == (1, 0.0, 12, "population")
    assert twin.sample_seed == 5 and twin.D == 12


# --------------------------------------------------------------------------------------------
# The fields of docs/model.md §10: defaults invisible, refusals, twins by law
# --------------------------------------------------------------------------------------------

#: The JSON (hash and file name) of a config made before §10, copied from a run of that version.
OLD_JSON = ('{"D": 500, "K": 2, "M": 2, "N": 1000, "alpha": 2.0, "blas_threads": 1, "block_size":'
            ' 500, "f": "sign", "first_seed_index": 0, "g": "erf", "input_model": "hmm", "lr": '
            '0.2, "m": 8, "precision": "f64", "records": 60, "sample_seed": null, "seed": 0, '
            '"seeds": 5, "sigma": 0.0, "standardize": "sample", "steps": 100000, "test_size": '
            '10000, "train_second_layer": true, "weights": "uniform"}')


def test_new_fields_at_their_defaults_leave_the_json_and_the_name_unchanged():
    from fastsgd.io import default_output_path
    cfg = SimConfig.from_json(OLD_JSON)
    assert cfg.to_json() == OLD_JSON
    assert (cfg.means, cfg.latent, cfg.teacher) == ("vector", "mixture", "random")
    name = default_output_path(cfg, Path("/nonexistent")).name
    assert "means" not in name and "latent" not in name and "teacher" not in name
    changed = cfg.replace(means="scalar", latent="matched_gaussian", teacher="aligned",
                          standardize="population")
    assert {"means", "latent", "teacher"} <= set(json.loads(changed.to_json()))
    assert SimConfig.from_json(changed.to_json()) == changed
    name = default_output_path(changed, Path("/nonexistent")).name
    assert "means-scalar" in name and "latent-matched_gaussian" in name and "teacher-aligned" \
        in name


@pytest.mark.parametrize("values, parameter", [
    (dict(means="matrix"), "means"),
    (dict(latent="gaussian"), "latent"),
    (dict(teacher="orthogonal"), "teacher"),
    (dict(teacher="aligned"), "teacher"),                                  # m = 1
    (dict(teacher="aligned", m=3), "teacher"),                             # alpha = 0
    (dict(teacher="aligned", m=2, alpha=1.0, weights=(1.0, 0.0)), "teacher"),
    (dict(teacher="aligned", m=2, alpha=1.0, means="scalar", standardize="sample"), "teacher"),
    (dict(latent="matched_gaussian", m=2, alpha=1.0, standardize="sample", block_size=1,
          moment_samples=100), "moment_samples"),
    (dict(latent="matched_gaussian", m=2, alpha=1.0, standardize="sample", block_size=1,
          D=10_000, N=100), "D"),
    (dict(moment_samples=0), "moment_samples"),
])
def test_refused_latent_laws_name_their_parameter(values, parameter):
    with pytest.raises(ConfigError) as info:
        SimConfig(**values)
    assert info.value.parameter == parameter


def test_allowed_aligned_and_matched_combinations():
    SimConfig(teacher="aligned", m=2, alpha=1.0, means="scalar", standardize="sample",
              block_size=100)
    SimConfig(teacher="aligned", m=2, alpha=1.0, latent="matched_gaussian", standardize="none")
    cfg = SimConfig(latent="matched_gaussian", m=2, alpha=1.0, standardize="sample")
    assert cfg.matched_method == "quadrature"


def test_twins_are_canonical_by_the_law_they_sample():
    cell = SimConfig(m=8, alpha=2.0, standardize="sample", seeds=5)
    floor = standard_normal_twin(cell)
    assert floor == gaussian_latent(cell)                  # the §6 floor, same hash as before
    assert floor.to_json() == gaussian_latent(cell).to_json()
    for other in (cell.replace(standardize="whiten"), cell.replace(m=2, block_size=1),
                  cell.replace(standardize="population", block_size=1)):
        assert standard_normal_twin(other) == floor
        assert matched_twin(other.replace(standardize="whiten")) == floor
    assert matched_twin(cell.replace(standardize="population", block_size=1)) == floor
    assert matched_twin(cell) == cell.replace(latent="matched_gaussian")
    assert canonical(cell) == cell
    aligned = cell.replace(teacher="aligned", standardize="population")
    twin = standard_normal_twin(aligned)
    assert (twin.teacher, twin.m, twin.alpha, twin.standardize, twin.latent) == (
        "aligned", 8, 2.0, "whiten", "matched_gaussian")
    assert standard_normal_twin(aligned.replace(standardize="none")) == twin
    # every exchangeable sample-standardized latent has the matched law N(0, D/(D−1)·P)
    centring = gaussian_latent(cell, standardize="sample", latent="matched_gaussian")
    for other in (cell.replace(means="scalar"), cell.replace(means="scalar", block_size=1, m=3),
                  cell.replace(alpha=0.0)):
        assert matched_twin(other) == centring
    assert matched_twin(cell.replace(means="scalar", block_size=100)).m == 8   # Monte Carlo
    # moment_samples counts only where a Monte Carlo law uses it
    assert canonical(cell.replace(moment_samples=5000)) == cell
    assert matched_twin(cell.replace(moment_samples=5000)) == matched_twin(cell)
    monte_carlo = cell.replace(block_size=1, moment_samples=5000)
    assert matched_twin(monte_carlo).moment_samples == 5000


def test_input_mean_vanishes_exactly_where_the_law_is_symmetric_or_the_fold_linear():
    """docs/model.md §10.5: E x = 0 exactly, and canonical() drops center_inputs there; the
    moment_samples of a run whose input moments are Monte Carlo ones stay in its canonical form."""
    from fastsgd.config import canonical, input_mean_vanishes
    base = dict(N=40, D=20, m=3, alpha=1.5)
    vanishing = [dict(standardize="whiten", latent="matched_gaussian"),
                 dict(standardize="population", f="linear"),
                 dict(standardize="sample", means="scalar"),
                 dict(m=1, alpha=0.0)]
    not_vanishing = [dict(standardize="population"), dict(standardize="whiten", f="sign"),
                     dict(standardize="sample", means="scalar", block_size=4),
                     dict(standardize="none", f="linear"),
                     dict(standardize="whiten", latent="matched_gaussian", f="relu")]
    for extra in vanishing:
        cfg = SimConfig(**{**base, **extra, "center_inputs": True})
        assert input_mean_vanishes(cfg) and not canonical(cfg).center_inputs, extra
    for extra in not_vanishing:
        cfg = SimConfig(**{**base, **extra, "center_inputs": True})
        assert not input_mean_vanishes(cfg) and canonical(cfg).center_inputs, extra
    tanh = SimConfig(N=40, D=20, f="tanh", moment_samples=4000)
    assert canonical(tanh).moment_samples == 4000          # the moments theory's Monte Carlo
    assert canonical(SimConfig(N=40, D=20, moment_samples=4000)).moment_samples == 1_000_000
