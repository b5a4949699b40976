"""Figures (fastsgd/plots.py; docs/model.md §8.1 `compare --plot` and `plot`).

plot_comparison draws a run's ε_g, Q, R and v against log t with its theory (an ODE or a
reference run); plot_heatmaps draws the sweep's heat maps from summary.csv rows (strings, as
read back), also with a failed cell and with a panel of only failed cells. Each must write a
non-empty PNG that is not a blank canvas. The figures' contents are checked on the Figure
objects that comparison_figure and heatmap_figure return: which ε_g estimate is shown, where a
stopped seed's data end and what the bands average over, a reference run's own band, and what a
heat map's d̄ is measured against with its s.e.m.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

import fastsgd
from fastsgd.plots import (PARTIAL_STYLE, _mean_sem, comparison_figure, heatmap_figure,
                           plot_comparison, plot_heatmaps, seed_stops)
from fastsgd.theory import theory_for

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = dict(N=48, D=24, steps=1500, records=15, test_size=200, seeds=2)
STOP_ROW = 5   # a stopped seed's records: rows 0..4


def assert_drawn_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5_000
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0).shape[0] > 20  # not blank


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fastsgd.simulate(fastsgd.SimConfig(**TINY),
                            out=tmp_path_factory.mktemp("plots") / "run.h5")


@pytest.fixture(scope="module")
def reference(run, tmp_path_factory):
    return fastsgd.simulate(run.config.replace(sample_seed=1),
                            out=tmp_path_factory.mktemp("plots") / "ref.h5")


def stopped(run, status, seed=1, rows=STOP_ROW, diverged_step=-1):
    """The run as if seed position ``seed`` had stopped after ``rows`` records, as a run file
    holds it: later rows NaN, /n_records, /status and /diverged_step set (docs/model.md §3.4)."""
    cut = {}
    for name in ("eg", "eg_mc", "Q", "R", "v"):
        values = getattr(run, name).copy()
        values[seed, rows:] = np.nan
        cut[name] = values
    empirical = {k: v.copy() for k, v in run.empirical.items()}
    for values in empirical.values():
        values[seed, rows:] = np.nan
    n_records = run.n_records.copy()
    n_records[seed] = rows
    steps = run.diverged_step.copy()
    steps[seed] = diverged_step
    statuses = list(run.status)
    statuses[seed] = status
    return dataclasses.replace(run, **cut, empirical=empirical, n_records=n_records,
                               diverged_step=steps, status=statuses)


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def vertical_lines_at(ax, t):
    """The lines of ``ax`` drawn vertically at x = t."""
    return [line for line in ax.get_lines() if len(line.get_xdata()) == 2
            and np.allclose(np.asarray(line.get_xdata(), dtype=float), t)
            and tuple(line.get_ydata()) == (0, 1)]


def line_labelled(ax, label):
    [line] = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def test_mean_sem_and_count_over_seeds_ignore_nan_rows():
    x = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan], [5.0, 4.0, np.nan]])
    mean, sem, n = _mean_sem(x)
    np.testing.assert_allclose(mean[:2], [3.0, 3.0])
    np.testing.assert_allclose(sem[:2], [2.0 / np.sqrt(3), np.sqrt(2.0) / np.sqrt(2)])
    assert np.isnan(mean[2]) and sem[2] == 0.0
    np.testing.assert_array_equal(n, [3, 2, 0])


def test_plot_comparison_with_an_ode_writes_a_png(run, tmp_path):
    path = tmp_path / "cmp.png"
    plot_comparison(run, theory_for(run, dt=0.05), path)
    assert_drawn_png(path)


def test_the_eg_panel_names_its_estimates(run):
    """ε_g of the simulation is eg_mc (test-set Monte Carlo), the ODE's its closed form."""
    fig = comparison_figure(run, theory_for(run, dt=0.05))
    ax = fig.axes[0]
    assert "eg_mc" in ax.get_ylabel() and "Monte Carlo" in ax.get_ylabel()
    texts = legend_texts(ax)
    assert "ε_g simulation (eg_mc)" in texts
    assert "ε_g N(0, I) HMM ODE (closed form)" in texts
    assert "vs N(0, I) HMM ODE" in fig.get_suptitle()
    assert "mean ± s.e.m. over the seeds recorded at t" in fig.get_suptitle()
    assert seed_stops(run) == []
    assert not any(vertical_lines_at(a, t) for a in fig.axes for t in run.t)


def test_plot_comparison_with_the_moments_theory_draws_the_empirical_fields(run, tmp_path,
                                                                          monkeypatch):
    """Against the moments theory (docs/model.md §10.5) the Q and R panels show the test-set
    covariances, which that theory predicts, not the N(0, I) /Q and /R."""
    import fastsgd.plots as plots
    drawn = []
    real = plots._mean_sem
    monkeypatch.setattr(plots, "_mean_sem", lambda x: (drawn.append(x), real(x))[1])
    path = tmp_path / "moments.png"
    theory = theory_for(run, dt=0.05, theory="moments")
    plot_comparison(run, theory, path)
    assert_drawn_png(path)
    assert any(np.array_equal(x, run.empirical["Q"][..., 0, 0][:, run.t > 0], equal_nan=True)
               for x in drawn)
    assert not any(np.array_equal(x, run.Q[..., 0, 0][:, run.t > 0], equal_nan=True)
                   for x in drawn)
    fig = comparison_figure(run, theory)
    assert fig.axes[1].get_ylabel() == "empirical Q"
    assert "ε_g moments ODE (closed form)" in legend_texts(fig.axes[0])


@pytest.mark.parametrize("status", ["diverged", "interrupted"])
def test_a_stopped_seed_is_marked_where_its_data_end(run, status):
    """A line at the stopped seed's last record in every panel, named in the ε_g legend with
    the time it diverged (diverged_step/N) or was interrupted."""
    step = int(run.step[STOP_ROW - 1]) + 7
    broken = stopped(run, status, diverged_step=step if status == "diverged" else -1)
    t_last = run.t[STOP_ROW - 1]
    [stop] = seed_stops(broken)
    assert (stop.seed_index, stop.status, stop.t_last) == (int(run.seed_index[1]), status,
                                                           t_last)
    fig = comparison_figure(broken, theory_for(broken, dt=0.05))
    for ax in fig.axes[:4]:
        assert len(vertical_lines_at(ax, t_last)) == 1
    if status == "diverged":
        expected = (f"seed {stop.seed_index} diverged at t = {step / run.config.N:.4g} "
                    f"(last record t = {t_last:.4g})")
    else:
        expected = f"seed {stop.seed_index} interrupted at t = {t_last:.4g}"
    assert stop.label == expected
    assert expected in legend_texts(fig.axes[0])


def test_the_bands_average_over_the_seeds_recorded_at_t(run):
    """After a seed stops, simulation and theory average over the same remaining seeds, and
    the means are dotted there: no silent change of the seeds behind a curve."""
    broken = stopped(run, "diverged", diverged_step=int(run.step[STOP_ROW]))
    theory = theory_for(broken, dt=0.05)
    fig = comparison_figure(broken, theory)
    ax = fig.axes[0]
    keep = run.t > 0
    later = run.t[keep] > run.t[STOP_ROW - 1]
    ode = line_labelled(ax, "ε_g N(0, I) HMM ODE (closed form)").get_ydata()
    np.testing.assert_allclose(np.asarray(ode)[~later],
                               theory.eg[:, keep].mean(axis=0)[~later])
    assert np.isnan(np.asarray(ode)[later]).all()   # the full-seed line stops there
    dotted = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()
              if line.get_linestyle() == PARTIAL_STYLE]
    assert len(dotted) == 2                         # simulation and ODE
    for values in dotted:
        assert np.isfinite(values[later]).all()
    expected = {tuple(np.round(theory.eg[0, keep][later], 12)),
                tuple(np.round(run.eg_mc[0, keep][later], 12))}
    assert {tuple(np.round(v[later], 12)) for v in dotted} == expected


def test_a_reference_run_gets_its_own_band(run, reference, tmp_path):
    """A reference run's ε_g is its eg_mc, a mean ± s.e.m. band of its own (hatched), not a
    line merged into the simulation's; also with a seed of NaN rows (docs/model.md §6)."""
    theory = theory_for(run, reference=reference)
    fig = comparison_figure(run, theory)
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    labels = sorted(c.get_label() for c in bands)
    assert labels == ["ε_g reference run ref.h5 (its eg_mc)",
                      "ε_g simulation (eg_mc)"]
    assert [bool(c.get_hatch()) for c in sorted(bands, key=lambda c: c.get_label())] == [
        True, False]
    assert set(labels) <= set(legend_texts(ax))
    ode = comparison_figure(run, theory_for(run, dt=0.05))
    assert len([c for c in ode.axes[0].collections if isinstance(c, PolyCollection)]) == 1
    broken = stopped(run, "diverged")
    path = tmp_path / "nan.png"
    plot_comparison(broken, theory_for(broken, reference=reference), path,
                    title="a seed diverged")
    assert_drawn_png(path)


def summary_row(m, alpha, standardize, verdict, d, mode="ode", sem="0.002"):
    prefix = "eg_dev_ode" if mode == "ode" else "eg_dev_ref"
    floor = "floor_ode" if mode == "ode" else "floor_ref"
    return {"m": str(m), "alpha": str(alpha), "standardize": standardize, "block_size": "D",
            "verdict_mode": mode, "verdict": verdict, f"{prefix}_mean": str(d),
            f"{prefix}_sem": sem, f"{floor}_mean": "0.021", f"{floor}_sem": "0.003"}


HEAT_ROWS = [summary_row(1, 0.5, "none", "matches", 0.02),
             summary_row(2, 0.5, "none", "deviates", 0.09, sem="0.004"),
             summary_row(1, 2, "none", "matches", 0.03, mode="reference"),
             {"m": "2", "alpha": "2", "standardize": "none", "block_size": "D",
              "verdict": "failed", "error": "KilledWorker: worker died"},
             summary_row(1, 0.5, "whiten", "matches", 0.02),
             summary_row(2, 2, "whiten", "matches", 0.025)]


def test_plot_heatmaps_with_a_failed_cell(tmp_path):
    path = tmp_path / "heat.png"
    plot_heatmaps(HEAT_ROWS, path)
    assert_drawn_png(path)


def test_heat_maps_say_what_d_is_measured_against_and_carry_the_sem():
    """Each cell shows d̄ ± s.e.m. with its verdict; the colour bar and the title name the
    theory (the reference-mode cell marked †), each panel's title its floor."""
    fig = heatmap_figure(HEAT_ROWS)
    none, whiten, bar = fig.axes
    texts = {t.get_text() for t in none.texts}
    assert texts == {"0.02\n± 0.002", "0.09 ✗\n± 0.004", "†0.03\n± 0.002", "fail"}
    assert {t.get_text() for t in whiten.texts} == {"0.02\n± 0.002", "0.025\n± 0.002"}
    against = "d̄ vs N(0, I) HMM ODE; † vs N(0, I) reference run"
    assert against in bar.get_ylabel()
    assert against in fig.get_suptitle().replace("\n", " ")
    assert "d̄ ± s.e.m." in fig.get_suptitle().replace("\n", " ")
    assert none.get_title().splitlines()[1:] == ["floor 0.021 ± 0.003", "†floor 0.021 ± 0.003"]
    assert whiten.get_title().splitlines()[1:] == ["floor 0.021 ± 0.003"]


def test_heat_maps_of_the_moments_deviation():
    rows = [{"m": "2", "alpha": "1", "standardize": "none", "block_size": "D",
             "verdict_mode": "ode", "verdict": "deviates", "eg_dev_ode_mean": "0.2",
             "eg_dev_moments_mean": "0.031", "eg_dev_moments_sem": "0.0042",
             "floor_moments_mean": "0.02", "floor_moments_sem": "0.001",
             "verdict_moments": "undetermined"},
            {"m": "4", "alpha": "1", "standardize": "none", "block_size": "D",
             "verdict_mode": "ode", "verdict": "matches", "verdict_moments": "unavailable"}]
    fig = heatmap_figure(rows, against="moments")
    ax, bar = fig.axes
    assert {t.get_text() for t in ax.texts} == {"0.031 ?\n± 0.0042", "n/a"}
    assert bar.get_ylabel() == "ε_g deviation d̄ vs moments ODE"
    assert ax.get_title().splitlines()[1] == "floor 0.02 ± 0.001"
    with pytest.raises(ValueError, match="against"):
        heatmap_figure(rows, against="ode")


def test_plot_heatmaps_when_every_cell_failed(tmp_path):
    rows = [{"m": "1", "alpha": "1", "standardize": "none", "block_size": "4",
             "verdict": "failed", "error": "ValueError: x"}]
    path = tmp_path / "failed.png"
    plot_heatmaps(rows, path)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1_000
