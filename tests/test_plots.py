"""Figures (fastsgd/plots.py; docs/model.md §8.1 `compare --plot` and `plot`).

plot_comparison draws a run's ε_g, Q, R and v against log t with its theory (an ODE or a
reference run), also with a seed whose rows are NaN; plot_heatmaps draws the sweep's heat maps
from summary.csv rows (strings, as read back), also with a failed cell and with a panel of only
failed cells. Each must write a non-empty PNG that is not a blank canvas.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fastsgd
from fastsgd.plots import _mean_sem, plot_comparison, plot_heatmaps
from fastsgd.theory import theory_for

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = dict(N=48, D=24, steps=1500, records=15, test_size=200, seeds=2)


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


def test_mean_and_sem_over_seeds_ignore_nan_rows():
    x = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan], [5.0, 4.0, np.nan]])
    mean, sem = _mean_sem(x)
    np.testing.assert_allclose(mean[:2], [3.0, 3.0])
    np.testing.assert_allclose(sem[:2], [2.0 / np.sqrt(3), np.sqrt(2.0) / np.sqrt(2)])
    assert np.isnan(mean[2]) and sem[2] == 0.0


def test_plot_comparison_with_an_ode_writes_a_png(run, tmp_path):
    path = tmp_path / "cmp.png"
    plot_comparison(run, theory_for(run, dt=0.05), path)
    assert_drawn_png(path)


def test_plot_comparison_with_the_moments_theory_draws_the_empirical_fields(run, tmp_path,
                                                                          monkeypatch):
    """Against the moments theory (docs/model.md §10.5) the Q and R panels show the test-set
    covariances, which that theory predicts, not the N(0, I) /Q and /R."""
    import fastsgd.plots as plots
    drawn = []
    real = plots._mean_sem
    monkeypatch.setattr(plots, "_mean_sem", lambda x: (drawn.append(x), real(x))[1])
    path = tmp_path / "moments.png"
    plot_comparison(run, theory_for(run, dt=0.05, theory="moments"), path)
    assert_drawn_png(path)
    assert any(np.array_equal(x, run.empirical["Q"][..., 0, 0][:, run.t > 0], equal_nan=True)
               for x in drawn)
    assert not any(np.array_equal(x, run.Q[..., 0, 0][:, run.t > 0], equal_nan=True)
                   for x in drawn)


def test_plot_comparison_with_a_reference_and_a_seed_of_nan_rows(run, tmp_path):
    """A diverged seed's rows are NaN after it stopped: the bands use the other seeds."""
    reference = fastsgd.simulate(run.config.replace(sample_seed=1), out=tmp_path / "ref.h5")
    eg_mc = run.eg_mc.copy()
    eg_mc[1, 5:] = np.nan
    Q = run.Q.copy()
    Q[1, 5:] = np.nan
    broken = dataclasses.replace(run, eg_mc=eg_mc, Q=Q, status=["ok", "diverged"])
    path = tmp_path / "nan.png"
    plot_comparison(broken, theory_for(broken, reference=reference), path,
                    title="a seed diverged")
    assert_drawn_png(path)


def summary_row(m, alpha, standardize, verdict, d, mode="ode"):
    prefix = "eg_dev_ode" if mode == "ode" else "eg_dev_ref"
    floor = "floor_ode" if mode == "ode" else "floor_ref"
    return {"m": str(m), "alpha": str(alpha), "standardize": standardize, "block_size": "D",
            "verdict_mode": mode, "verdict": verdict, f"{prefix}_mean": str(d),
            f"{prefix}_sem": "0.002", f"{floor}_mean": "0.021", f"{floor}_sem": "0.003"}


def test_plot_heatmaps_with_a_failed_cell(tmp_path):
    rows = [summary_row(1, 0.5, "none", "matches", 0.02),
            summary_row(2, 0.5, "none", "deviates", 0.09),
            summary_row(1, 2, "none", "matches", 0.03, mode="reference"),
            {"m": "2", "alpha": "2", "standardize": "none", "block_size": "D",
             "verdict": "failed", "error": "KilledWorker: worker died"},
            summary_row(1, 0.5, "whiten", "matches", 0.02),
            summary_row(2, 2, "whiten", "matches", 0.025)]
    path = tmp_path / "heat.png"
    plot_heatmaps(rows, path)
    assert_drawn_png(path)


def test_plot_heatmaps_when_every_cell_failed(tmp_path):
    rows = [{"m": "1", "alpha": "1", "standardize": "none", "block_size": "4",
             "verdict": "failed", "error": "ValueError: x"}]
    path = tmp_path / "failed.png"
    plot_heatmaps(rows, path)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1_000
