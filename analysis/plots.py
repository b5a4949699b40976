"""Figures: a run's trajectories against its theory (ε_g, Q, R, v against log t)."""

from __future__ import annotations

import numpy as np


def _mean_sem(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and s.e.m. over the seed axis, ignoring NaN rows (diverged or unwritten)."""
    n = np.sum(np.isfinite(x), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(x, axis=0) if np.isfinite(x).any() else np.full(x.shape[1:], np.nan)
        sem = np.where(n >= 2, np.nanstd(x, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, sem


def plot_comparison(run, theory, path, *, title: str | None = None) -> None:
    """Four panels against t (log scale): ε_g (Monte Carlo), Q, R and v. The simulation is
    drawn as mean ± s.e.m. bands over seeds, the theory (ODE or reference run, averaged over the
    same seeds) as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = run.config
    keep = run.t > 0
    t = run.t[keep]
    tk = theory.t > 0
    tt = theory.t[tk]
    label = "ODE" if theory.kind == "ode" else "reference run"
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def band(ax, sim, ref, name, color):
        mean, sem = _mean_sem(sim[:, keep])
        ax.fill_between(t, mean - sem, mean + sem, color=color, alpha=0.3, linewidth=0)
        ax.plot(t, mean, color=color, linewidth=0.8, alpha=0.8, label=f"{name} simulation")
        ref_mean = np.nanmean(ref[:, tk], axis=0)
        ax.plot(tt, ref_mean, color=color, linewidth=1.6, linestyle="--", label=f"{name} {label}")

    ax = axes[0, 0]
    band(ax, run.eg_mc, theory.eg, "ε_g", colors[0])
    ax.set_yscale("log")
    ax.set_ylabel("generalisation error ε_g")
    panels = [(axes[0, 1], "Q", run.Q, theory.Q, [(k, l) for k in range(cfg.K)
                                                  for l in range(k, cfg.K)]),
              (axes[1, 0], "R", run.R, theory.R, [(k, n) for k in range(cfg.K)
                                                  for n in range(cfg.M)])]
    for ax, name, sim, ref, entries in panels:
        for c, (i, j) in enumerate(entries[:10]):
            band(ax, sim[..., i, j], ref[..., i, j], f"{name}{i}{j}", colors[c % len(colors)])
        ax.set_ylabel(name)
    ax = axes[1, 1]
    for k in range(min(cfg.K, 10)):
        band(ax, run.v[..., k], theory.v[..., k], f"v{k}", colors[k % len(colors)])
    ax.set_ylabel("v")
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_xlabel("t = steps / N")
        ax.legend(fontsize=7, ncol=2)
    n_seeds = len(run.status)
    fig.suptitle(title or (
        f"{run.path.name}: N={cfg.N}, D={cfg.D}, K={cfg.K}, M={cfg.M}, m={cfg.m}, "
        f"α={cfg.alpha:g}, {cfg.standardize}, f={cfg.f}, g={cfg.g}, lr={cfg.lr:g}, "
        f"{n_seeds} seed{'s' if n_seeds > 1 else ''}; bands: mean ± s.e.m."), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
