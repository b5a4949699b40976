"""The ``fastsgd simulate`` command line and SimConfig validation (docs/model.md §8.1, §8.2, §8.3).

Every simulation here is tiny (N = 32, D = 16, 300 steps, 200 test samples, 5 records), so the
module runs in a few seconds. Bad input must end with exit code 2, exactly one stderr line that
names the parameter, no traceback and no file written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import fastsgd
from fastsgd.cli import cli, main
from fastsgd.config import ConfigError, SimConfig
from fastsgd.io import default_output_path

N, D, STEPS, TEST_SIZE, RECORDS = 32, 16, 300, 200, 5
#: A tiny but valid run; the options under test are appended (click: the last one wins).
TINY = ["-N", str(N), "-D", str(D), "--steps", str(STEPS), "--test-size", str(TEST_SIZE),
        "--records", str(RECORDS)]
#: Record steps of TINY, by hand: {0} ∪ rint(geomspace(1, 300, 4)) = {0, 1, 7, 45, 300}.
TINY_STEPS = [0, 1, 7, 45, 300]


def simulate_args(*extra: str) -> list[str]:
    return ["simulate", *TINY, *extra]


def run_main(capsys, args: list[str]) -> tuple[int, str, str]:
    """main(args) -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, fragments) -> None:
    """Exactly one non-empty stderr line, no traceback, containing every fragment."""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    line = lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        if isinstance(fragment, tuple):  # any of several spellings
            assert any(f in line for f in fragment), f"none of {fragment!r} in {line!r}"
        else:
            assert fragment in line, f"{fragment!r} not in {line!r}"


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# 1. Count parsing
# --------------------------------------------------------------------------------------------

GOOD_STEPS = ["1e3", "1_000", "1000"]
BAD_STEPS = ["1.5", "abc", "0", "-5"]


@pytest.mark.parametrize("text", GOOD_STEPS)
def test_steps_count_forms_accepted_by_cli_runner(text, tmp_path):
    out = tmp_path / "run.h5"
    result = CliRunner().invoke(cli, simulate_args("--steps", text, "--out", str(out), "-q"))
    assert result.exit_code == 0, (result.output, result.exception)
    run = fastsgd.load(out)
    assert run.config.steps == 1000 and type(run.config.steps) is int
    stored = json.loads(run.attrs["config"])["steps"]
    assert stored == 1000 and type(stored) is int  # written as an integer, not 1000.0
    assert int(run.step[-1]) == 1000
    assert run.status == ["ok"]


@pytest.mark.parametrize("text", GOOD_STEPS)
def test_steps_count_forms_accepted_by_main(text, tmp_path, capsys):
    out = tmp_path / "run.h5"
    code, stdout, err = run_main(capsys, simulate_args("--steps", text, "--out", str(out)))
    assert code == 0, err
    assert err == ""
    assert str(out) in stdout  # the one-line summary names the file
    assert fastsgd.load(out).config.steps == 1000


@pytest.mark.parametrize("text", BAD_STEPS)
def test_bad_steps_refused_by_cli_runner(text, tmp_path):
    out = tmp_path / "run.h5"
    result = CliRunner().invoke(cli, simulate_args("--steps", text, "--out", str(out)))
    assert result.exit_code == 2, (result.output, result.exception)
    assert "--steps" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("text", BAD_STEPS)
def test_bad_steps_refused_by_main(text, tmp_path, capsys):
    out = tmp_path / "run.h5"
    code, stdout, err = run_main(capsys, simulate_args("--steps", text, "--out", str(out)))
    assert code == 2
    assert stdout == ""
    assert_one_line_error(err, ["--steps", "integer"])
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# 2. Bad input: exit 2, one line naming the parameter, nothing written
# --------------------------------------------------------------------------------------------

BAD_INPUTS = [
    # (id, extra arguments, fragments that must all occur in the one stderr line)
    ("N=0", ["-N", "0"], ["'--N'", "[1, "]),
    ("D=0", ["-D", "0"], ["'--D'", "[1, "]),
    ("K=0", ["-K", "0"], ["'-K'", "[1, "]),
    ("M=0", ["-M", "0"], ["'-M'", "[1, "]),
    ("m=0", ["--m", "0"], ["'--m'", "[1, "]),
    ("steps=0", ["--steps", "0"], ["'--steps'", "[1, "]),
    ("seeds=0", ["--seeds", "0"], ["'--seeds'", "[1, "]),
    ("test-size=0", ["--test-size", "0"], ["'--test-size'", "[1, "]),
    ("records=1", ["--records", "1"], ["'--records'", "[2, "]),
    ("blas-threads=0", ["--blas-threads", "0"], ["'--blas-threads'", "[1, "]),
    ("threads=0", ["--threads", "0"], ["'--threads'", "[1, "]),
    ("seed=-1", ["--seed", "-1"], ["'--seed'", "[0, "]),
    ("sample-seed=-1", ["--sample-seed", "-1"], ["'--sample-seed'", "[0, "]),
    ("first-seed-index=-1", ["--first-seed-index", "-1"], ["'--first-seed-index'", "[0, "]),
    ("alpha=-1", ["--alpha", "-1"], ["alpha", ">= 0"]),
    ("alpha=nan", ["--alpha", "nan"], ["alpha", "finite"]),
    ("alpha=inf", ["--alpha", "inf"], ["alpha", "finite"]),
    ("alpha=abc", ["--alpha", "abc"], ["alpha", "number"]),
    ("lr=0", ["--lr", "0"], ["lr", "> 0"]),
    ("lr=-0.1", ["--lr", "-0.1"], ["lr", "> 0"]),
    ("lr=nan", ["--lr", "nan"], ["lr", "finite"]),
    ("sigma=-1", ["--sigma", "-1"], ["sigma", ">= 0"]),
    ("sigma=inf", ["--sigma", "inf"], ["sigma", "finite"]),
    ("block-size=5 of D=16", ["--block-size", "5"], [("block_size", "--block-size"), "D"]),
    ("block-size>D", ["--block-size", "32"], [("block_size", "--block-size")]),
    ("f=foo", ["--f", "foo"], ["'--f'", "sign"]),
    ("g=foo", ["--g", "foo"], ["'--g'", "erf"]),
    ("standardize=foo", ["--standardize", "foo"], ["'--standardize'", "whiten"]),
    ("weights=foo", ["--weights", "foo"], ["'--weights'", "dirichlet"]),
    ("precision=f32", ["--precision", "f32"], ["'--precision'", "mixed"]),
    ("input-model=foo", ["--input-model", "foo"], ["'--input-model'", "equivalent_gaussian"]),
    ("standardize=sample with D=1", ["--standardize", "sample", "-D", "1"],
     ["standardize", "D"]),
    ("N=1e12", ["-N", "1e12"], ["'--N'", "1e12"]),
    # The missing --out folder is a fail-safe: were 1e16 steps accepted, the run is still refused
    # (for the wrong reason, so the test fails) instead of running for ever.
    ("steps=1e16", ["--steps", "1e16", "--out", "missing/run.h5"], ["'--steps'"]),
    ("blas-threads>1 with seeds>1", ["--blas-threads", "2", "--seeds", "2"],
     ["blas_threads", "seeds"]),
    ("unknown option", ["--bogus", "1"], ["--bogus"]),
    ("missing value", ["--steps"], ["--steps"]),
]


@pytest.mark.parametrize("with_out", [True, False], ids=["out", "default-out"])
@pytest.mark.parametrize("extra,fragments", [pytest.param(a, f, id=i) for i, a, f in BAD_INPUTS])
def test_bad_input_refused_without_writing(extra, fragments, with_out, tmp_path, monkeypatch,
                                           capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sub" / "run.h5"
    out.parent.mkdir()
    args = simulate_args(*(["--out", str(out)] if with_out else []), *extra)
    code, stdout, err = run_main(capsys, args)
    assert code == 2, (stdout, err)
    assert stdout == ""
    assert_one_line_error(err, fragments)
    assert not out.exists()
    assert list(tmp_path.glob("data/*.h5")) == []
    assert files_under(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="memory check reads /proc/meminfo")
def test_run_that_cannot_fit_in_memory_is_refused_up_front(tmp_path, monkeypatch, capsys):
    # N·D = 1e14 doubles: refused with the figure before any allocation or file (docs/model.md §8.1).
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_main(capsys, simulate_args("-N", "1e7", "-D", "1e7"))
    assert code == 2
    assert_one_line_error(err, ["memory", "GiB"])
    assert files_under(tmp_path) == []


# --------------------------------------------------------------------------------------------
# 3. Overwrite refusal and missing folders
# --------------------------------------------------------------------------------------------

def test_existing_out_is_refused_then_replaced_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run.h5"
    code, _, err = run_main(capsys, simulate_args("--out", str(out), "--seed", "0"))
    assert code == 0, err
    before = out.read_bytes()

    code, stdout, err = run_main(capsys, simulate_args("--out", str(out), "--seed", "1"))
    assert code == 2
    assert_one_line_error(err, ["--overwrite"])
    assert out.read_bytes() == before
    assert fastsgd.load(out).config.seed == 0

    code, _, err = run_main(capsys, simulate_args("--out", str(out), "--seed", "1",
                                                   "--overwrite"))
    assert code == 0, err
    run = fastsgd.load(out)
    assert run.config.seed == 1
    assert run.status == ["ok"]
    assert out.read_bytes() != before


def test_existing_foreign_file_is_left_byte_identical(tmp_path, capsys):
    out = tmp_path / "precious.h5"
    payload = b"not a run file \x00\xff keep me\n"
    out.write_bytes(payload)
    code, _, err = run_main(capsys, simulate_args("--out", str(out)))
    assert code == 2
    assert_one_line_error(err, ["--overwrite"])
    assert out.read_bytes() == payload

    result = CliRunner().invoke(cli, simulate_args("--out", str(out), "--overwrite", "-q"))
    assert result.exit_code == 0, (result.output, result.exception)
    assert fastsgd.load(out).config.N == N


def test_out_in_missing_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "no_such_folder" / "run.h5"
    code, stdout, err = run_main(capsys, simulate_args("--out", str(out)))
    assert code == 2
    assert_one_line_error(err, ["no_such_folder"])
    assert not out.parent.exists()
    assert files_under(tmp_path) == []


def test_out_that_is_a_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "folder.h5"
    folder.mkdir()
    code, _, err = run_main(capsys, simulate_args("--out", str(folder), "--overwrite"))
    assert code == 2
    assert_one_line_error(err, ["folder.h5"])
    assert folder.is_dir() and files_under(tmp_path) == []


# --------------------------------------------------------------------------------------------
# 4. Default output path
# --------------------------------------------------------------------------------------------

def test_default_out_gets_numeric_suffix_when_taken(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    expected_first = default_output_path(SimConfig(N=N, D=D, steps=STEPS, test_size=TEST_SIZE,
                                                   records=RECORDS), Path("data"))
    code, stdout1, err = run_main(capsys, simulate_args())
    assert code == 0, err
    first = sorted((tmp_path / "data").glob("*.h5"))
    assert [p.relative_to(tmp_path) for p in first] == [expected_first]
    assert str(expected_first) in stdout1

    code, stdout2, err = run_main(capsys, simulate_args())
    assert code == 0, err
    files = sorted((tmp_path / "data").glob("*.h5"))
    assert len(files) == 2
    (second,) = [p for p in files if p != first[0]]
    assert second.name == f"{first[0].stem}_1.h5"
    assert second.name in stdout2
    assert first[0].read_bytes() != b""  # the first file is still there, untouched by the rerun
    for path in files:
        run = fastsgd.load(path)
        assert run.status == ["ok"] and run.config.N == N

    code, stdout3, err = run_main(capsys, simulate_args("--quiet"))
    assert code == 0 and stdout3 == "" and err == ""
    assert len(list((tmp_path / "data").glob("*.h5"))) == 3
    assert (tmp_path / "data" / f"{first[0].stem}_2.h5").is_file()


# --------------------------------------------------------------------------------------------
# 5. Option names, --first-layer-only and the HDF5 layout
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,expected", [
    (["-M", "3", "--m", "2"], {"M": 3, "m": 2, "K": 2}),
    (["--m", "3", "-M", "1"], {"M": 1, "m": 3, "K": 2}),
    (["-K", "3"], {"K": 3, "M": 2, "m": 1}),
    (["--N", "40"], {"N": 40, "D": D}),
    (["-N", "40"], {"N": 40, "D": D}),
    (["--D", "8"], {"N": N, "D": 8, "block_size": 8}),
    (["-D", "8", "--block-size", "2"], {"D": 8, "block_size": 2}),
], ids=["-M3 --m2", "--m3 -M1", "-K3", "--N40", "-N40", "--D8", "-D8 B2"])
def test_option_names_set_the_right_fields(extra, expected, tmp_path, capsys):
    out = tmp_path / "run.h5"
    code, _, err = run_main(capsys, simulate_args(*extra, "--out", str(out), "-q"))
    assert code == 0, err
    cfg = fastsgd.load(out).config
    for name, value in expected.items():
        assert getattr(cfg, name) == value, name
    assert cfg.train_second_layer is True


def test_case_sensitive_option_names_are_not_aliases(tmp_path, capsys):
    # -m (short, lower case) and --M are not declared: only -M and --m exist (docs/model.md §8.1).
    for extra in (["-m", "2"], ["--M", "2"], ["--n", "40"]):
        code, _, err = run_main(capsys, simulate_args(*extra, "--out", str(tmp_path / "x.h5")))
        assert code == 2, extra
        assert_one_line_error(err, [extra[0]])
    assert files_under(tmp_path) == []


def test_first_layer_only(tmp_path, capsys):
    out = tmp_path / "run.h5"
    code, _, err = run_main(capsys, simulate_args("--first-layer-only", "--out", str(out), "-q"))
    assert code == 0, err
    run = fastsgd.load(out)
    assert run.config.train_second_layer is False
    np.testing.assert_array_equal(run.v, 1.0)        # v = 1 fixed (docs/model.md §3.2)
    np.testing.assert_array_equal(run.final_v, 1.0)
    assert not np.allclose(run.final_w, 0)


def test_hdf5_layout_and_shapes(tmp_path, capsys):
    S, K, M, m = 2, 3, 4, 6
    out = tmp_path / "run.h5"
    code, _, err = run_main(capsys, simulate_args("--seeds", str(S), "-K", str(K), "-M", str(M),
                                                  "--m", str(m), "--alpha", "0.5",
                                                  "--out", str(out), "-q"))
    assert code == 0, err
    n_t = len(TINY_STEPS)
    expected = {
        "step": (n_t,), "t": (n_t,),
        "Q": (S, n_t, K, K), "R": (S, n_t, K, M), "T": (S, M, M), "v": (S, n_t, K), "A": (S, M),
        "W": (S, n_t, K, K), "Sigma": (S, n_t, K, K), "eg": (S, n_t), "eg_mc": (S, n_t),
        "empirical/Q": (S, n_t, K, K), "empirical/R": (S, n_t, K, M),
        "empirical/T": (S, n_t, M, M),
        "n_records": (S,), "diverged_step": (S,), "status": (S,),
        "mixture/means": (S, m, D), "mixture/weights": (S, m),
        "final/w": (S, K, N), "final/v": (S, K),
        "initial_state/rhos": (S, D), "initial_state/r": (S, K, M, D),
        "initial_state/sigma": (S, K, K, D), "initial_state/W": (S, K, K),
        "initial_state/T": (S, M, M), "initial_state/T_tilde": (S, M, M),
        "initial_state/v": (S, K), "initial_state/A": (S, M),
    }
    with h5py.File(out, "r") as fh:
        missing = [name for name in expected if name not in fh]
        assert missing == []
        shapes = {name: fh[name].shape for name in expected}
        assert shapes == expected
        assert fh["step"].dtype == np.int64
        assert fh["n_records"].dtype == np.int64 and fh["diverged_step"].dtype == np.int64
        assert fh["t"].dtype == np.float64 and fh["Q"].dtype == np.float64
        assert fh["status"].dtype == np.dtype("S12")
        np.testing.assert_array_equal(fh["step"][...], TINY_STEPS)
        np.testing.assert_array_equal(fh["t"][...], np.array(TINY_STEPS) / N)
        assert list(fh["status"][...]) == [b"ok"] * S
        np.testing.assert_array_equal(fh["n_records"][...], [n_t] * S)
        np.testing.assert_array_equal(fh["diverged_step"][...], [-1] * S)
        for name in ("Q", "R", "v", "eg", "eg_mc", "empirical/Q", "final/w"):
            assert np.isfinite(fh[name][...]).all(), name
        attrs = dict(fh.attrs)
    for key in ("creator", "fastsgd_version", "format_version", "created", "command_line",
                "config", "gen_block"):
        assert key in attrs, key
    text = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
    assert text(attrs["creator"]) == "fastsgd"
    assert int(attrs["format_version"]) == 1
    versions = " ".join(attrs)
    for lib in ("python", "numpy", "numba", "scipy", "h5py"):
        assert lib in versions, lib
    config = json.loads(text(attrs["config"]))
    assert {k: config[k] for k in ("N", "D", "K", "M", "m", "seeds", "steps")} == \
        {"N": N, "D": D, "K": K, "M": M, "m": m, "seeds": S, "steps": STEPS}
    assert SimConfig.from_json(text(attrs["config"])) == fastsgd.load(out).config
    assert "threads" not in config  # --threads cannot change results and is not in the config


# --------------------------------------------------------------------------------------------
# 6. SimConfig directly
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


def test_config_errors_exit_2_through_click_runner_too(tmp_path):
    from click.testing import CliRunner
    from fastsgd.cli import cli
    out = tmp_path / "x.h5"
    result = CliRunner().invoke(cli, ["simulate", "-N", "32", "-D", "16", "--alpha", "-1",
                                      "--out", str(out)])
    assert result.exit_code == 2 and "alpha" in result.output
    assert not out.exists()


from hypothesis import given, settings, strategies as st  # noqa: E402


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
