"""The command line (docs/model.md §8.1; exit codes and one-line errors, §7.11): `fastsgd simulate`
and the HDF5 layout it writes (§8.2), and `fastsgd ode` and `fastsgd compare` (§8.1, §8.4, §6,
§5.5). `fastsgd sweep` and `fastsgd plot DIR` are in tests/test_sweep.py.

Every run here is tiny: `simulate` runs N = 32, D = 16, 300 steps, 200 test samples, 5 records;
`ode`/`compare` use runs of N = 64, D = 32, 3000 steps, 20 records, 300 test samples, 3 seeds,
made once per module. Each command goes through :func:`fastsgd.cli.main`, which returns the exit
code (or click's runner). Bad input must end with exit code 2, exactly one stderr line that names
the parameter or the problem, no traceback and no file written.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import fastsgd
from fastsgd.cli import cli, main
from fastsgd.config import SimConfig
from fastsgd.io import default_output_path
from fastsgd.theory import deviation_table, load_ode_file

N, D, STEPS, TEST_SIZE, RECORDS = 32, 16, 300, 200, 5
#: A tiny but valid run; the options under test are appended (click: the last one wins).
TINY = ["-N", str(N), "-D", str(D), "--steps", str(STEPS), "--test-size", str(TEST_SIZE),
        "--records", str(RECORDS)]
#: Record steps of TINY, by hand: {0} ∪ rint(geomspace(1, 300, 4)) = {0, 1, 7, 45, 300}.
TINY_STEPS = [0, 1, 7, 45, 300]
#: The runs of `fastsgd ode` and `fastsgd compare`.
THEORY_RUN = dict(N=64, D=32, steps=3000, records=20, test_size=300, seeds=3)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Learning rates tried, in order, for a g = linear run in which some but not all seeds
#: diverge (f = sign, seed 0: lr = 2.5 diverges seed index 1 only).
DIVERGING_LRS = (2.5, 2.75, 3.0, 2.25, 3.5, 2.0)


def simulate_args(*extra: str) -> list[str]:
    return ["simulate", *TINY, *extra]


def run_main(capsys, args) -> tuple[int, str, str]:
    """main(args) -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, fragments=(), *, case_sensitive: bool = True) -> str:
    """Exactly one stderr line, no traceback, containing every fragment (a tuple of fragments:
    any of them)."""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert "Traceback" not in err
    line = lines[0]
    fold = (lambda text: text) if case_sensitive else str.lower
    for fragment in fragments:
        options = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(fold(f) in fold(line) for f in options), f"none of {options!r} in {line!r}"
    return line


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


def test_config_errors_exit_2_through_click_runner_too(tmp_path):
    from click.testing import CliRunner
    from fastsgd.cli import cli
    out = tmp_path / "x.h5"
    result = CliRunner().invoke(cli, ["simulate", "-N", "32", "-D", "16", "--alpha", "-1",
                                      "--out", str(out)])
    assert result.exit_code == 2 and "alpha" in result.output
    assert not out.exists()


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
    assert_one_line_error(err, ["no_such_folder", "--out"])
    assert "out: out:" not in err  # the flag, then the library's sentence, once
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
# 6. `fastsgd ode` and `fastsgd compare`: helpers and module-scoped runs
# --------------------------------------------------------------------------------------------

def table_rows(out: str, which: int = 0) -> dict[str, tuple[float, float, int]]:
    """The rows (mean, s.e.m., n_valid) of the ``which``-th deviation table printed."""
    tables, current = [], None
    for line in out.splitlines():
        if line.split()[:1] == ["quantity"]:
            current = {}
            tables.append(current)
            continue
        parts = line.split()
        if current is not None and len(parts) == 4:
            try:
                current[parts[0]] = (float(parts[1]), float(parts[2]), int(parts[3]))
            except ValueError:
                current = None
        elif current is not None and parts:
            current = None
    assert len(tables) > which, f"no deviation table #{which} in {out!r}"
    return tables[which]


def close_3sig(printed: float, exact: float) -> bool:
    """The printed number agrees with ``exact`` to (about) 3 significant digits."""
    if math.isnan(exact):
        return math.isnan(printed)
    return abs(printed - exact) <= 5e-3 * abs(exact) + 1e-12


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def simulate_run(folder: Path, name: str, **overrides) -> fastsgd.Run:
    cfg = fastsgd.SimConfig(**{**THEORY_RUN, **overrides})
    return fastsgd.simulate(cfg, out=folder / name)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("theory_runs")


@pytest.fixture(scope="module")
def gauss(runs_dir) -> fastsgd.Run:
    """The Gaussian-latent run (f = sign, g = erf): the cell's floor and the ODE's home."""
    run = simulate_run(runs_dir, "gauss.h5")
    assert run.status == ["ok"] * THEORY_RUN["seeds"]
    return run


@pytest.fixture(scope="module")
def gauss_ref(runs_dir) -> fastsgd.Run:
    """The reference run: the Gaussian run with sample_seed = seed + 1."""
    run = simulate_run(runs_dir, "gauss_ref.h5", sample_seed=1)
    assert run.status == ["ok"] * THEORY_RUN["seeds"]
    return run


@pytest.fixture(scope="module")
def cell(runs_dir) -> fastsgd.Run:
    """A non-Gaussian cell (m = 2, alpha = 1): compared with the floor run `gauss`."""
    run = simulate_run(runs_dir, "cell.h5", m=2, alpha=1.0)
    assert run.status == ["ok"] * THEORY_RUN["seeds"]
    return run


@pytest.fixture(scope="module")
def relu_f(runs_dir) -> fastsgd.Run:
    return simulate_run(runs_dir, "relu_f.h5", f="relu")


@pytest.fixture(scope="module")
def relu_g(runs_dir) -> fastsgd.Run:
    return simulate_run(runs_dir, "relu_g.h5", g="relu")


@pytest.fixture(scope="module")
def ode_file(gauss, runs_dir) -> Path:
    """`fastsgd ode gauss.h5 --out gauss_ode.h5` (euler, dt = 0.01: compare's defaults)."""
    out = runs_dir / "gauss_ode.h5"
    assert main(["ode", str(gauss.path), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def diverged(runs_dir) -> fastsgd.Run:
    """A g = linear run in which at least one seed diverges and at least two do not."""
    tried = []
    for lr in DIVERGING_LRS:
        run = simulate_run(runs_dir, f"diverged_lr{lr}.h5", f="sign", g="linear", lr=lr)
        tried.append((lr, run.status))
        n_div = run.status.count("diverged")
        if n_div >= 1 and run.status.count("ok") >= 2:
            return run
    pytest.fail(f"no learning rate gave a partly diverged run: {tried}")


# --------------------------------------------------------------------------------------------
# 7. fastsgd ode
# --------------------------------------------------------------------------------------------

def test_ode_writes_the_documented_layout(gauss, ode_file):
    S, n = len(gauss.status), gauss.t.shape[0]
    K, M = gauss.config.K, gauss.config.M
    with h5py.File(ode_file, "r") as fh:
        np.testing.assert_array_equal(fh["seed_index"][...], gauss.seed_index)
        assert fh["seed_index"].shape == (S,)
        t = fh["t"][...]
        assert t.shape == (n,)
        np.testing.assert_array_equal(t, gauss.t)  # the run's /t, exactly
        expected = {"Q": (S, n, K, K), "W": (S, n, K, K), "Sigma": (S, n, K, K),
                    "R": (S, n, K, M), "v": (S, n, K), "eg": (S, n), "T": (S, M, M),
                    "A": (S, M), "status": (S,)}
        for name, shape in expected.items():
            assert name in fh, f"/{name} missing"
            assert fh[name].shape == shape, (name, fh[name].shape, shape)
        status = [s.decode("ascii") if isinstance(s, bytes) else str(s)
                  for s in fh["status"][...]]
        assert status == ["ok"] * S
        attrs = dict(fh.attrs)
    with h5py.File(gauss.path, "r") as fh:
        run_attrs = dict(fh.attrs)
    for key, value in run_attrs.items():  # the run's root attributes, unchanged
        assert key in attrs, f"root attribute {key!r} not copied"
        assert attrs[key] == value, (key, attrs[key], value)
    meta = json.loads(attrs["ode"])
    assert meta["dt"] == 0.01
    assert meta["method"] == "euler"
    assert Path(meta["source"]).name == gauss.path.name


def test_ode_starts_from_the_runs_state(gauss, ode_file):
    with h5py.File(ode_file, "r") as fh:
        Q0, eg0 = fh["Q"][:, 0], fh["eg"][:, 0]
        R0, v0 = fh["R"][:, 0], fh["v"][:, 0]
        eg = fh["eg"][...]
    assert gauss.t[0] == 0.0
    np.testing.assert_allclose(Q0, gauss.Q[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(R0, gauss.R[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(v0, gauss.v[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(eg0, gauss.eg[:, 0], rtol=1e-12, atol=1e-14)
    assert np.all(np.isfinite(eg)) and np.all(eg > 0)


def test_ode_one_seed_index(gauss, ode_file, tmp_path, capsys):
    out = tmp_path / "one.h5"
    code, _, err = run_main(capsys, ["ode", gauss.path, "--seed-index", "1", "--out", out])
    assert code == 0, err
    with h5py.File(out, "r") as fh, h5py.File(ode_file, "r") as full:
        np.testing.assert_array_equal(fh["seed_index"][...], [1])
        n, K = gauss.t.shape[0], gauss.config.K
        assert fh["Q"].shape == (1, n, K, K)
        assert fh["eg"].shape == (1, n)
        assert fh["status"].shape == (1,)
        # the ODE of seed index 1 does not depend on which other seeds are integrated
        np.testing.assert_allclose(fh["eg"][0], full["eg"][1], rtol=1e-12)
        np.testing.assert_allclose(fh["Q"][0], full["Q"][1], rtol=1e-12)


def test_ode_rk4_agrees_with_euler(gauss, ode_file, tmp_path, capsys):
    out = tmp_path / "rk4.h5"
    code, _, err = run_main(capsys, ["ode", gauss.path, "--method", "rk4", "--dt", "0.05",
                                     "--out", out])
    assert code == 0, err
    with h5py.File(out, "r") as fh, h5py.File(ode_file, "r") as euler:
        meta = json.loads(fh.attrs["ode"])
        assert meta["method"] == "rk4" and meta["dt"] == 0.05
        np.testing.assert_array_equal(fh["t"][...], gauss.t)
        eg_rk4, eg_euler = fh["eg"][...], euler["eg"][...]
    assert np.all(np.isfinite(eg_rk4))
    np.testing.assert_allclose(eg_rk4, eg_euler, rtol=1e-2)


# --------------------------------------------------------------------------------------------
# 8. fastsgd ode refusals
# --------------------------------------------------------------------------------------------

def _refused(capsys, folder: Path, args, fragments) -> None:
    before = files_in(folder)
    code, _, err = run_main(capsys, args)
    assert code == 2, (code, err)
    assert_one_line_error(err, fragments, case_sensitive=False)
    assert files_in(folder) == before, "a refused command wrote a file"


def test_ode_refuses_f_relu(relu_f, tmp_path, capsys):
    _refused(capsys, tmp_path, ["ode", relu_f.path, "--out", tmp_path / "o.h5"], ["relu"])


def test_ode_and_compare_serve_g_relu(relu_g, tmp_path, capsys):
    """g = relu has its ODE (numerical ReLU I4): ode writes it, compare reads it."""
    out = tmp_path / "relu_ode.h5"
    code, _, err = run_main(capsys, ["ode", relu_g.path, "--out", out])
    assert code == 0, err
    ode = load_ode_file(out, relu_g)
    assert np.all(ode.valid) and np.all(np.isfinite(ode.eg))
    code, text, err = run_main(capsys, ["compare", relu_g.path, out])
    assert code == 0, err
    assert "eg" in text


def test_ode_refuses_existing_out(gauss, tmp_path, capsys):
    out = tmp_path / "exists.h5"
    out.write_bytes(b"keep me")
    stat = out.stat()
    _refused(capsys, tmp_path, ["ode", gauss.path, "--out", out],
             [("exists", "overwrite")])
    assert out.read_bytes() == b"keep me"
    assert out.stat().st_mtime_ns == stat.st_mtime_ns


def test_ode_overwrite_replaces_existing_out(gauss, tmp_path, capsys):
    out = tmp_path / "exists.h5"
    out.write_bytes(b"replace me")
    code, _, err = run_main(capsys, ["ode", gauss.path, "--out", out, "--overwrite"])
    assert code == 0, err
    with h5py.File(out, "r") as fh:
        assert "ode" in fh.attrs


def test_ode_refuses_a_file_that_is_not_hdf5(tmp_path, capsys):
    bad = tmp_path / "text.h5"
    bad.write_text("this is not an HDF5 file\n")
    _refused(capsys, tmp_path, ["ode", bad, "--out", tmp_path / "o.h5"],
             ["text.h5", "hdf5"])


def test_ode_refuses_hdf5_that_is_not_a_run(tmp_path, capsys):
    bad = tmp_path / "other.h5"
    with h5py.File(bad, "w") as fh:
        fh["x"] = np.arange(3)
    _refused(capsys, tmp_path, ["ode", bad, "--out", tmp_path / "o.h5"],
             ["other.h5", ("creator", "not a fastsgd")])


def test_ode_refuses_unsupported_format_version(gauss, tmp_path, capsys):
    copy = tmp_path / "future.h5"
    shutil.copyfile(gauss.path, copy)
    with h5py.File(copy, "a") as fh:
        fh.attrs["format_version"] = 99
    _refused(capsys, tmp_path, ["ode", copy, "--out", tmp_path / "o.h5"],
             ["format_version", "99"])


def test_ode_refuses_missing_file(tmp_path, capsys):
    _refused(capsys, tmp_path, ["ode", tmp_path / "nowhere.h5", "--out", tmp_path / "o.h5"],
             ["nowhere.h5", ("no such file", "not found", "does not exist")])


def test_ode_refuses_unknown_seed_index(gauss, tmp_path, capsys):
    _refused(capsys, tmp_path, ["ode", gauss.path, "--seed-index", "99",
                                "--out", tmp_path / "o.h5"], ["--seed-index", "99"])


@pytest.mark.parametrize("dt", ["0", "nan"])
def test_ode_refuses_bad_dt(gauss, tmp_path, capsys, dt):
    _refused(capsys, tmp_path, ["ode", gauss.path, "--dt", dt, "--out", tmp_path / "o.h5"],
             ["--dt", dt])


# --------------------------------------------------------------------------------------------
# 9. fastsgd compare
# --------------------------------------------------------------------------------------------

def test_compare_with_ode_file_prints_the_deviation_table(gauss, ode_file, capsys):
    code, out, err = run_main(capsys, ["compare", gauss.path, ode_file])
    assert code == 0, err
    rows = table_rows(out)
    expected = deviation_table(gauss, load_ode_file(ode_file, gauss))
    for name in ("eg_mc", "eg", "Q", "R", "v"):
        assert name in rows, f"row {name} missing from {out!r}"
        mean, sem, n_valid = rows[name]
        assert close_3sig(mean, expected[name].mean), (name, mean, expected[name].mean)
        assert close_3sig(sem, expected[name].sem), (name, sem, expected[name].sem)
        assert n_valid == expected[name].n_valid == THEORY_RUN["seeds"]
    assert "ODE" in out


def test_compare_on_the_fly_gives_the_same_numbers(gauss, ode_file, capsys):
    code, with_file, err = run_main(capsys, ["compare", gauss.path, ode_file])
    assert code == 0, err
    code, on_the_fly, err = run_main(capsys, ["compare", gauss.path])
    assert code == 0, err
    assert table_rows(on_the_fly) == table_rows(with_file)


def test_compare_reference_mode(gauss, gauss_ref, cell, capsys):
    code, out, err = run_main(capsys, ["compare", cell.path, "--reference", gauss_ref.path])
    assert code == 0, err
    assert "reference run" in out
    rows = table_rows(out)
    assert rows["eg_mc"][2] == THEORY_RUN["seeds"]
    assert math.isfinite(rows["eg_mc"][0]) and rows["eg_mc"][0] > 0


def test_compare_reference_mode_serves_f_relu(relu_f, runs_dir, capsys):
    """No ODE applies to f = relu; its reference is the same run with sample_seed + 1."""
    ref = simulate_run(runs_dir, "relu_f_ref.h5", f="relu", sample_seed=1)
    code, out, err = run_main(capsys, ["compare", relu_f.path, "--reference", ref.path])
    assert code == 0, err
    assert "reference run" in out


def test_compare_refuses_f_relu_without_reference(relu_f, capsys):
    code, _, err = run_main(capsys, ["compare", relu_f.path])
    assert code == 2
    assert_one_line_error(err, ["relu"], case_sensitive=False)


@pytest.mark.parametrize("mode", ["ode", "reference"])
def test_compare_floor_prints_a_verdict(gauss, gauss_ref, cell, capsys, mode):
    extra = ["--reference", gauss_ref.path] if mode == "reference" else []
    code, out, err = run_main(capsys, ["compare", cell.path, *extra, "--floor", gauss.path])
    assert code == 0, err
    verdicts = [line for line in out.splitlines() if line.lower().startswith("verdict")]
    assert len(verdicts) == 1, out
    assert re.search(r"\b(matches|deviates|undetermined)\b", verdicts[0]), verdicts[0]
    assert len(table_rows(out, 1)) >= 5  # the floor's own table


def test_compare_refuses_ode_file_and_reference(gauss, gauss_ref, ode_file, tmp_path, capsys):
    plot = tmp_path / "p.png"
    code, out, err = run_main(capsys, ["compare", gauss.path, ode_file,
                                       "--reference", gauss_ref.path, "--plot", plot])
    assert code == 2
    assert_one_line_error(err, [("reference", "ODE.h5")], case_sensitive=False)
    assert not plot.exists()


def test_compare_plot_writes_a_png(gauss, ode_file, tmp_path, capsys):
    plot = tmp_path / "cmp.png"
    code, _, err = run_main(capsys, ["compare", gauss.path, ode_file, "--plot", plot])
    assert code == 0, err
    data = plot.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000


# --------------------------------------------------------------------------------------------
# 10. A diverged seed
# --------------------------------------------------------------------------------------------

def test_diverged_seed_is_excluded(diverged, tmp_path, capsys):
    bad = [i for i, s in enumerate(diverged.status) if s == "diverged"]
    good = [i for i, s in enumerate(diverged.status) if s == "ok"]
    assert bad and len(good) >= 2
    out = tmp_path / "div_ode.h5"
    code, _, err = run_main(capsys, ["ode", diverged.path, "--out", out])
    assert code == 0, err
    table = deviation_table(diverged, load_ode_file(out, diverged))
    eg_mc = table["eg_mc"]
    assert np.all(np.isnan(eg_mc.values[bad]))
    assert np.all(np.isfinite(eg_mc.values[good]))  # f = sign, g = linear: the ODE holds
    assert eg_mc.n_valid == len(good)
    assert eg_mc.mean == pytest.approx(np.mean(eg_mc.values[good]), rel=1e-12)
    for name, agg in table.items():
        assert np.all(np.isnan(agg.values[bad])), name
        assert agg.n_valid <= len(good), name
    code, printed, err = run_main(capsys, ["compare", diverged.path, out])
    assert code == 0, err
    rows = table_rows(printed)
    assert rows["eg_mc"][2] == len(good)
    assert close_3sig(rows["eg_mc"][0], eg_mc.mean)


def test_compare_plot_into_missing_folder_is_refused(gauss, ode_file, tmp_path, capsys):
    plot = tmp_path / "no_such_folder" / "p.png"
    code, _, err = run_main(capsys, ["compare", gauss.path, ode_file, "--plot", plot])
    assert code == 2
    assert_one_line_error(err, ["no_such_folder"], case_sensitive=False)


def test_compare_refuses_an_ode_file_made_for_another_run(gauss, ode_file, tmp_path, capsys):
    import fastsgd
    other = fastsgd.simulate(gauss.config.replace(lr=0.3), out=tmp_path / "other.h5")
    code, _, err = run_main(capsys, ["compare", other.path, ode_file])
    assert code == 2
    assert_one_line_error(err, ["another run"], case_sensitive=False)


def test_ode_and_compare_with_the_moments_theory(tmp_path, capsys):
    """`fastsgd ode --theory moments` and `fastsgd compare --theory moments` (docs/model.md
    §10.5): a centred run gets its ODE file and a table of the quantities the theory predicts;
    an uncentred mixture run is refused with one line naming ‖E x‖² and exit 2."""
    common = ["simulate", "--N", "64", "--D", "32", "--m", "3", "--alpha", "1.5",
              "--standardize", "population", "--steps", "2000", "--records", "10",
              "--test-size", "200", "-q"]
    centred, plain = tmp_path / "c.h5", tmp_path / "p.h5"
    for path, extra in ((centred, ["--center-inputs"]), (plain, [])):
        assert run_main(capsys, [*common, *extra, "--out", path])[0] == 0
    ode_path = tmp_path / "ode.h5"
    code, out, _ = run_main(capsys, ["ode", centred, "--theory", "moments", "--method", "rk4",
                                     "--out", ode_path])
    assert code == 0 and "moments theory, rk4, dt = ≤ 0.1" in out
    code, out, _ = run_main(capsys, ["compare", centred, ode_path])
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[2:6]] == [
        "eg_mc", "v", "empirical/Q", "empirical/R"]
    code, _, err = run_main(capsys, ["ode", plain, "--theory", "moments", "--out",
                                     tmp_path / "x.h5"])
    assert code == 2 and not (tmp_path / "x.h5").exists()
    assert_one_line_error(err, ["‖E x‖²", "--center-inputs"])
    code, _, err = run_main(capsys, ["compare", centred, ode_path, "--theory", "hmm"])
    assert code == 2
    assert_one_line_error(err, ["moments theory, not hmm"])
