"""``fastsgd ode`` and ``fastsgd compare``: a run against its theory (docs/model.md §8.1, §6, §5.5).

The runs are tiny (N = 64, D = 32, 3000 steps, 20 records, 300 test samples, 3 seeds) and made
once per module. Each command goes through :func:`fastsgd.cli.main`, which returns the exit
code. Bad input must end with exit code 2, exactly one stderr line naming the problem, no
traceback and no output file.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import fastsgd
from fastsgd.theory import deviation_table, load_ode_file
from fastsgd.cli import main

TINY = dict(N=64, D=32, steps=3000, records=20, test_size=300, seeds=3)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Learning rates tried, in order, for a g = linear run in which some but not all seeds
#: diverge (f = sign, seed 0: lr = 2.5 diverges seed index 1 only).
DIVERGING_LRS = (2.5, 2.75, 3.0, 2.25, 3.5, 2.0)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def run_main(capsys, args) -> tuple[int, str, str]:
    """main(args) -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, fragments=()) -> str:
    """Exactly one non-empty stderr line, no traceback, containing every fragment (a tuple
    of fragments: any of them, case-insensitive)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert "Traceback" not in err
    line = lines[0]
    for fragment in fragments:
        options = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(f.lower() in line.lower() for f in options), \
            f"none of {options!r} in {line!r}"
    return line


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


def simulate(folder: Path, name: str, **overrides) -> fastsgd.Run:
    cfg = fastsgd.SimConfig(**{**TINY, **overrides})
    return fastsgd.simulate(cfg, out=folder / name)


# --------------------------------------------------------------------------------------------
# Module-scoped runs
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("theory_runs")


@pytest.fixture(scope="module")
def gauss(runs_dir) -> fastsgd.Run:
    """The Gaussian-latent run (f = sign, g = erf): the cell's floor and the ODE's home."""
    run = simulate(runs_dir, "gauss.h5")
    assert run.status == ["ok"] * TINY["seeds"]
    return run


@pytest.fixture(scope="module")
def gauss_ref(runs_dir) -> fastsgd.Run:
    """The reference run: the Gaussian run with sample_seed = seed + 1."""
    run = simulate(runs_dir, "gauss_ref.h5", sample_seed=1)
    assert run.status == ["ok"] * TINY["seeds"]
    return run


@pytest.fixture(scope="module")
def cell(runs_dir) -> fastsgd.Run:
    """A non-Gaussian cell (m = 2, alpha = 1): compared with the floor run `gauss`."""
    run = simulate(runs_dir, "cell.h5", m=2, alpha=1.0)
    assert run.status == ["ok"] * TINY["seeds"]
    return run


@pytest.fixture(scope="module")
def relu_f(runs_dir) -> fastsgd.Run:
    return simulate(runs_dir, "relu_f.h5", f="relu")


@pytest.fixture(scope="module")
def relu_g(runs_dir) -> fastsgd.Run:
    return simulate(runs_dir, "relu_g.h5", g="relu")


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
        run = simulate(runs_dir, f"diverged_lr{lr}.h5", f="sign", g="linear", lr=lr)
        tried.append((lr, run.status))
        n_div = run.status.count("diverged")
        if n_div >= 1 and run.status.count("ok") >= 2:
            return run
    pytest.fail(f"no learning rate gave a partly diverged run: {tried}")


# --------------------------------------------------------------------------------------------
# 1. fastsgd ode
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
# 2. fastsgd ode refusals
# --------------------------------------------------------------------------------------------

def _refused(capsys, folder: Path, args, fragments) -> None:
    before = files_in(folder)
    code, _, err = run_main(capsys, args)
    assert code == 2, (code, err)
    assert_one_line_error(err, fragments)
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
# 3. fastsgd compare
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
        assert n_valid == expected[name].n_valid == TINY["seeds"]
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
    assert rows["eg_mc"][2] == TINY["seeds"]
    assert math.isfinite(rows["eg_mc"][0]) and rows["eg_mc"][0] > 0


def test_compare_reference_mode_serves_f_relu(relu_f, runs_dir, capsys):
    """No ODE applies to f = relu; its reference is the same run with sample_seed + 1."""
    ref = simulate(runs_dir, "relu_f_ref.h5", f="relu", sample_seed=1)
    code, out, err = run_main(capsys, ["compare", relu_f.path, "--reference", ref.path])
    assert code == 0, err
    assert "reference run" in out


def test_compare_refuses_f_relu_without_reference(relu_f, capsys):
    code, _, err = run_main(capsys, ["compare", relu_f.path])
    assert code == 2
    assert_one_line_error(err, ["relu"])


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
    assert_one_line_error(err, [("reference", "ODE.h5")])
    assert not plot.exists()


def test_compare_plot_writes_a_png(gauss, ode_file, tmp_path, capsys):
    plot = tmp_path / "cmp.png"
    code, _, err = run_main(capsys, ["compare", gauss.path, ode_file, "--plot", plot])
    assert code == 0, err
    data = plot.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000


# --------------------------------------------------------------------------------------------
# 4. A diverged seed
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
    assert_one_line_error(err, ["no_such_folder"])


def test_compare_refuses_an_ode_file_made_for_another_run(gauss, ode_file, tmp_path, capsys):
    import fastsgd
    other = fastsgd.simulate(gauss.config.replace(lr=0.3), out=tmp_path / "other.h5")
    code, _, err = run_main(capsys, ["compare", other.path, ode_file])
    assert code == 2
    assert_one_line_error(err, ["another run"])
