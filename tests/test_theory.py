"""A run against its theory through the Python API (fastsgd/theory.py; docs/model.md §6, §8.1,
§8.4). The command lines `fastsgd ode` and `fastsgd compare` are in tests/test_cli.py.

1. theory_for's precedence: a reference run, else an ODE file, else the ODE integrated now; a
   configuration without an ODE (f = relu, a ≠ 0) raises TheoryUnavailable.
2. same_theory_for gives a floor the same kind of theory: the same reference run, or its own ODE
   with the same dt and method.
3. compare_run with and without a floor gives the per-seed deviations of deviations(); its
   verdict is universality_verdict on eg_mc; a floor of other (N, D) is refused.
4. deviations: NaN for every quantity of a diverged seed or of a seed whose theory is unusable.
5. The ODE file: write_ode_file / load_ode_file round trip, rows matched by seed index, and the
   refusals of §8.4 (no `ode` attribute, another run's config, another time grid, a missing
   seed index); reference_curves' refusals.
7. The moments theory (§10.5): its refusals (E c ≠ 0, an uncentred E x ≠ 0, other input models),
   its ODE file (theory recorded, mean fields, only the quantities it predicts), its Monte Carlo
   error, and same_theory_for keeping its step control.

The runs are tiny (N = 64, D = 32, 3000 steps, 20 records, 300 test samples, 3 seeds) and made
once per module.
"""

from __future__ import annotations

import dataclasses
import json
import math

import h5py
import numpy as np
import pytest

import fastsgd
from analysis.deviation import universality_verdict
from fastsgd.config import gaussian_latent
from fastsgd.theory import (QUANTITIES, Comparison, TheoryUnavailable,
                            check_moments_theory_applies, check_ode_applies, compare_run,
                            deviations, format_table, integrate_run, load_ode_file,
                            moments_odes, ode_curves, reference_curves, same_theory_for,
                            theory_for, write_ode_file)

TINY = dict(N=64, D=32, steps=3000, records=20, test_size=300, seeds=3)
CURVES = ("t", "eg", "eg_closed", "Q", "R", "v", "valid")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("theory")


@pytest.fixture(scope="module")
def cell(folder):
    cfg = fastsgd.SimConfig(m=2, alpha=1.0, **TINY)
    return fastsgd.simulate(cfg, out=folder / "cell.h5")


@pytest.fixture(scope="module")
def floor(folder, cell):
    return fastsgd.simulate(gaussian_latent(cell.config), out=folder / "floor.h5")


@pytest.fixture(scope="module")
def reference(folder, floor):
    cfg = floor.config.replace(sample_seed=floor.config.sample_entropy + 1)
    return fastsgd.simulate(cfg, out=folder / "reference.h5")


@pytest.fixture(scope="module")
def ode_path(folder, cell):
    trajectories = integrate_run(cell, dt=0.02, method="euler")
    return write_ode_file(folder / "cell_ode.h5", cell, range(3), trajectories, dt=0.02,
                          method="euler")


def assert_same_curves(a, b):
    assert (a.kind, a.dt, a.method) == (b.kind, b.dt, b.method)
    for name in CURVES:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def assert_same_deviations(a: dict, b: dict):
    assert set(a) == set(b) == set(QUANTITIES)
    for name in QUANTITIES:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# --------------------------------------------------------------------------------------------
# 1. theory_for
# --------------------------------------------------------------------------------------------

def test_theory_for_precedence(cell, reference, ode_path, folder):
    """reference > ode_file > on the fly: with a reference, an ODE file (even a missing one) is
    not read; with an ODE file, dt and method are the file's."""
    by_reference = theory_for(cell, ode_file=folder / "no_such_file.h5", reference=reference,
                              dt=0.5, method="rk4")
    assert by_reference.kind == "reference" and by_reference.reference is reference
    assert by_reference.source == str(reference.path)
    assert_same_curves(by_reference, reference_curves(cell, reference))

    by_file = theory_for(cell, ode_file=ode_path, dt=0.5, method="rk4")
    assert (by_file.kind, by_file.dt, by_file.method) == ("ode", 0.02, "euler")
    assert by_file.source == str(ode_path)

    on_the_fly = theory_for(cell, dt=0.02, method="euler")
    assert on_the_fly.kind == "ode" and "ODE" in on_the_fly.source
    for name in CURVES:        # the file holds what the same integration gives now
        np.testing.assert_array_equal(getattr(by_file, name), getattr(on_the_fly, name))


def test_no_ode_for_a_relu_fold(folder):
    run = fastsgd.simulate(fastsgd.SimConfig(f="relu", **{**TINY, "seeds": 1}),
                           out=folder / "relu_f.h5")
    with pytest.raises(TheoryUnavailable, match="relu") as info:
        theory_for(run)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TheoryUnavailable):
        integrate_run(run)
    for f in ("sign", "erf", "linear", "tanh"):
        check_ode_applies(fastsgd.SimConfig(f=f))
    check_ode_applies(fastsgd.SimConfig(input_model="equivalent_gaussian"))
    # a reference run still serves it
    reference = fastsgd.simulate(run.config.replace(sample_seed=1), out=folder / "relu_ref.h5")
    theory = theory_for(run, reference=reference)
    assert theory.kind == "reference"
    assert np.isfinite(deviations(run, theory)["eg_mc"]).all()


# --------------------------------------------------------------------------------------------
# 2. same_theory_for
# --------------------------------------------------------------------------------------------

def test_same_theory_for_an_ode_reuses_dt_and_method(cell, floor):
    theory = theory_for(cell, dt=0.05, method="rk4")
    assert (theory.dt, theory.method) == (0.05, "rk4")
    floor_theory = same_theory_for(floor, theory)
    assert_same_curves(floor_theory,
                       ode_curves(floor, integrate_run(floor, dt=0.05, method="rk4")))
    # and it is the floor's own ODE, not the cell's (same initial state, §4.4, other data)
    np.testing.assert_array_equal(floor_theory.Q[:, 0], theory.Q[:, 0])
    assert not np.array_equal(floor_theory.eg, theory_for(floor).eg)      # not dt = 0.01 Euler


def test_same_theory_for_a_reference_reuses_the_reference_run(cell, floor, reference):
    theory = theory_for(cell, reference=reference)
    floor_theory = same_theory_for(floor, theory)
    assert floor_theory.kind == "reference" and floor_theory.reference is reference
    assert_same_curves(floor_theory, reference_curves(floor, reference))


# --------------------------------------------------------------------------------------------
# 3. compare_run and the verdict
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["ode", "reference"])
def test_compare_run_gives_the_deviations_and_the_verdict(mode, cell, floor, reference):
    theory = (theory_for(cell, reference=reference) if mode == "reference"
              else theory_for(cell, dt=0.02))
    window = dict(t_min=0.2, t_max=30.0)
    alone = compare_run(cell, theory, **window)
    assert isinstance(alone, Comparison) and alone.floor_deviations is None
    assert alone.verdict is None and alone.floor_table is None
    assert_same_deviations(alone.cell_deviations, deviations(cell, theory, **window))
    for name, agg in alone.table.items():
        np.testing.assert_array_equal(agg.values, alone.cell_deviations[name])

    with_floor = compare_run(cell, theory, floor=floor, **window)
    assert_same_deviations(with_floor.cell_deviations, alone.cell_deviations)
    assert_same_deviations(with_floor.floor_deviations,
                           deviations(floor, same_theory_for(floor, theory), **window))
    expected = universality_verdict(with_floor.cell_deviations["eg_mc"],
                                    with_floor.floor_deviations["eg_mc"])
    got = with_floor.verdict
    assert got.verdict == expected.verdict and got.verdict in ("matches", "deviates")
    for field in ("paired_mean", "paired_sem", "paired_z", "combined_sem", "z", "p_one_sided"):
        a, b = getattr(got, field), getattr(expected, field)
        assert a == b or (math.isnan(a) and math.isnan(b)), field
    assert got.cell.mean == with_floor.table["eg_mc"].mean
    assert got.floor.mean == with_floor.floor_table["eg_mc"].mean
    # an explicit floor theory is used as given
    given = compare_run(cell, theory, floor=floor, floor_theory=theory_for(floor, dt=0.01),
                        **window)
    assert_same_deviations(given.floor_deviations,
                           deviations(floor, theory_for(floor, dt=0.01), **window))


def test_compare_run_refuses_a_floor_of_other_sizes(cell, folder):
    other = fastsgd.simulate(fastsgd.SimConfig(**{**TINY, "D": 16, "seeds": 1}),
                             out=folder / "other_D.h5")
    with pytest.raises(ValueError, match="floor"):
        compare_run(cell, theory_for(cell, dt=0.05), floor=other)


def test_format_table_prints_every_quantity(cell):
    comparison = compare_run(cell, theory_for(cell, dt=0.05))
    text = format_table(comparison.table, "title line")
    lines = text.splitlines()
    assert lines[0] == "title line" and lines[1].split() == ["quantity", "mean", "s.e.m.",
                                                             "n_valid"]
    assert [line.split()[0] for line in lines[2:]] == list(QUANTITIES)
    assert all(line.split()[-1] == "3" for line in lines[2:])


# --------------------------------------------------------------------------------------------
# 4. deviations: unusable seeds
# --------------------------------------------------------------------------------------------

def test_diverged_seeds_and_unusable_theories_give_nan(cell, reference):
    theory = theory_for(cell, reference=reference)
    base = deviations(cell, theory)
    assert all(np.isfinite(base[name]).all() for name in QUANTITIES)
    diverged = dataclasses.replace(cell, status=["ok", "diverged", "ok"])
    d = deviations(diverged, theory)
    unusable = dataclasses.replace(theory, valid=np.array([True, True, False]))
    e = deviations(cell, unusable)
    for name in QUANTITIES:
        assert np.isnan(d[name][1]) and np.isnan(e[name][2]), name
        np.testing.assert_array_equal(d[name][[0, 2]], base[name][[0, 2]])
        np.testing.assert_array_equal(e[name][:2], base[name][:2])
    # an interrupted seed is not excluded (docs/model.md §6)
    interrupted = dataclasses.replace(cell, status=["ok", "interrupted", "ok"])
    assert np.isfinite(deviations(interrupted, theory)["eg_mc"][1])
    # a reference seed that is not ok makes its pair unusable
    bad_reference = dataclasses.replace(reference, status=["ok", "ok", "diverged"])
    assert reference_curves(cell, bad_reference).valid.tolist() == [True, True, False]


# --------------------------------------------------------------------------------------------
# 5. The ODE file (§8.4) and reference pairing
# --------------------------------------------------------------------------------------------

def test_ode_file_rows_are_matched_by_seed_index(cell, folder):
    positions = [2, 0, 1]
    trajectories = integrate_run(cell, positions, dt=0.05)
    path = write_ode_file(folder / "shuffled.h5", cell, positions, trajectories, dt=0.05,
                          method="euler")
    assert not path.with_name(path.name + ".tmp").exists()
    with h5py.File(path, "r") as fh:
        assert fh["seed_index"][...].tolist() == [int(cell.seed_index[i]) for i in positions]
        assert json.loads(fh.attrs["ode"])["equations"].startswith("docs/model.md §5.2")
        assert fh.attrs["config"] == cell.attrs["config"]
        assert np.all(np.isnan(fh["t_failed"][...]))
    loaded = load_ode_file(path, cell)
    assert_same_curves(loaded, ode_curves(cell, integrate_run(cell, dt=0.05)))


def test_write_ode_file_refusals(cell, folder):
    trajectories = integrate_run(cell, [0], dt=0.05)
    existing = folder / "existing.h5"
    existing.write_bytes(b"keep")
    with pytest.raises(fastsgd.OutputExistsError):
        write_ode_file(existing, cell, [0], trajectories, dt=0.05, method="euler")
    assert existing.read_bytes() == b"keep"
    write_ode_file(existing, cell, [0], trajectories, dt=0.05, method="euler", overwrite=True)
    with h5py.File(existing, "r") as fh:
        assert "ode" in fh.attrs and fh["seed_index"][...].tolist() == [0]
    with pytest.raises(FileNotFoundError):
        write_ode_file(folder / "missing" / "o.h5", cell, [0], trajectories, dt=0.05,
                       method="euler")


def test_load_ode_file_refusals(cell, floor, ode_path, folder):
    with pytest.raises(fastsgd.RunFileError, match="made for another run"):
        load_ode_file(ode_path, floor)
    not_ode = folder / "not_ode.h5"
    with h5py.File(not_ode, "w") as fh:
        fh["x"] = np.arange(2)
    with pytest.raises(fastsgd.RunFileError, match="no 'ode' attribute"):
        load_ode_file(not_ode, cell)
    text = folder / "text.h5"
    text.write_text("plain text")
    with pytest.raises(fastsgd.RunFileError, match="not a readable HDF5 file"):
        load_ode_file(text, cell)
    partial = write_ode_file(folder / "partial.h5", cell, [0, 2],
                             integrate_run(cell, [0, 2], dt=0.05), dt=0.05, method="euler")
    with pytest.raises(fastsgd.RunFileError, match=r"seed index\(es\) \[1\]"):
        load_ode_file(partial, cell)
    shifted = dataclasses.replace(cell, t=cell.t * 1.5)
    with pytest.raises(fastsgd.RunFileError, match="time grid"):
        load_ode_file(ode_path, shifted)


def test_reference_curves_refusals(cell, reference, folder):
    with pytest.raises(ValueError, match=r"seed index\(es\) \[2\]"):
        reference_curves(cell, dataclasses.replace(reference, seed_index=np.array([0, 1, 7])))
    other = fastsgd.simulate(fastsgd.SimConfig(**{**TINY, "N": 48, "seeds": 3}),
                             out=folder / "other_N.h5")
    with pytest.raises(ValueError, match="sizes"):
        reference_curves(cell, other)
    # pairing is by seed index, not position
    reordered = dataclasses.replace(
        reference, seed_index=reference.seed_index[::-1].copy(),
        eg_mc=reference.eg_mc[::-1].copy(), eg=reference.eg[::-1].copy(),
        Q=reference.Q[::-1].copy(), R=reference.R[::-1].copy(), v=reference.v[::-1].copy(),
        status=reference.status[::-1])
    assert_same_curves(reference_curves(cell, reordered), reference_curves(cell, reference))


# --------------------------------------------------------------------------------------------
# 7. the moments theory (docs/model.md §10.5)
@pytest.fixture(scope="module")
def centred(folder):
    cfg = fastsgd.SimConfig(m=3, alpha=1.5, standardize="population", center_inputs=True, **TINY)
    return fastsgd.simulate(cfg, out=folder / "centred.h5")


def test_moments_theory_refuses_what_it_cannot_hold(cell, folder):
    with pytest.raises(TheoryUnavailable, match="E c"):          # none: E c = μ̄ ≠ 0
        moments_odes(cell)
    uncentred = fastsgd.simulate(fastsgd.SimConfig(m=3, alpha=1.5, standardize="population",
                                                   **{**TINY, "seeds": 1}),
                                 out=folder / "uncentred.h5")
    with pytest.raises(TheoryUnavailable, match="‖E x‖² = .*center-inputs"):
        moments_odes(uncentred)
    with pytest.raises(TheoryUnavailable, match="input_model"):
        check_moments_theory_applies(fastsgd.SimConfig(input_model="equivalent_gaussian"))


def test_moments_ode_file_round_trip_and_quantities(centred, folder):
    odes = moments_odes(centred, dt=0.02)
    assert odes.moments_method == "exact" and np.isnan(odes.error).all()
    np.testing.assert_array_equal(odes.mean_fields, centred.mean_fields)
    path = write_ode_file(folder / "moments.h5", centred, range(3), odes.trajectories,
                          dt=0.02, method="euler", theory="moments", moments=odes)
    loaded = theory_for(centred, ode_file=path)
    assert loaded.theory == "moments"
    assert_same_curves(loaded, ode_curves(centred, odes.trajectories, theory="moments"))
    with h5py.File(path) as fh:
        assert "W" not in fh and fh["mean_fields"].shape == centred.mean_fields.shape
        assert json.loads(fh.attrs["ode"])["theory"] == "moments"
    with pytest.raises(fastsgd.RunFileError, match="moments theory, not hmm"):
        theory_for(centred, ode_file=path, theory="hmm")
    d = deviations(centred, loaded)
    assert set(d) == {"eg_mc", "v", "empirical/Q", "empirical/R"}
    assert all(np.isfinite(x).all() for x in d.values())
    on_the_fly = theory_for(centred, dt=0.02, theory="moments")
    np.testing.assert_array_equal(on_the_fly.eg, loaded.eg)


def test_moments_theory_by_monte_carlo_states_its_error(folder):
    """B < D: the input moments come from (s,6,1) in two halves; the error is the halves'
    half-difference, finite and small, and it shrinks with the sample count."""
    base = dict(m=3, alpha=1.5, standardize="whiten", block_size=4, center_inputs=True,
                **{**TINY, "seeds": 1})
    errors = []
    for samples in (4_000, 64_000):
        run = fastsgd.simulate(fastsgd.SimConfig(moment_samples=samples, **base),
                               out=folder / f"mc{samples}.h5")
        odes = moments_odes(run, dt=0.05)
        assert odes.moments_method == "monte_carlo" and odes.samples == samples
        errors.append(odes.error[0])
    assert np.isfinite(errors).all() and errors[1] < errors[0] < 0.1, errors


def test_same_theory_for_keeps_the_moments_theory_and_its_step_control(centred):
    theory = theory_for(centred, theory="moments", method="rk4")
    assert theory.step_control and "controlled" in theory.source
    again = same_theory_for(centred, theory)
    assert again.theory == "moments" and again.step_control
    np.testing.assert_array_equal(again.eg, theory.eg)
