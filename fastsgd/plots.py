"""Figures: a run's trajectories against its theory (ε_g, Q, R, v against log t), and a sweep's
deviation heat maps and three-way class maps over (m, α)."""

from __future__ import annotations

import warnings

import numpy as np


def _mean_sem(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and s.e.m. over the seed axis, ignoring NaN rows (diverged or unwritten)."""
    n = np.sum(np.isfinite(x), axis=0)
    # a time where every seed is NaN gives NaN; NumPy's warnings about it say nothing more
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
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
    if theory.kind == "ode" and theory.theory == "moments":   # it predicts the real fields
        label = "moments ODE"
        Q, R, op = run.empirical["Q"], run.empirical["R"], "empirical "
    else:
        Q, R, op = run.Q, run.R, ""
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
    panels = [(axes[0, 1], "Q", Q, theory.Q, [(k, l) for k in range(cfg.K)
                                              for l in range(k, cfg.K)]),
              (axes[1, 0], "R", R, theory.R, [(k, n) for k in range(cfg.K)
                                              for n in range(cfg.M)])]
    for ax, name, sim, ref, entries in panels:
        for c, (i, j) in enumerate(entries[:10]):
            band(ax, sim[..., i, j], ref[..., i, j], f"{name}{i}{j}", colors[c % len(colors)])
        ax.set_ylabel(op + name)
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


#: Grid keys that split a sweep's maps into panels (the last two always, the others where
#: the sweep varies them).
PANEL_KEYS = ("means", "teacher", "latent", "standardize", "block_size")
#: Colours of the three-way classes of docs/model.md §10.4 (and of failed cells).
CLASS_COLOURS = {"gaussian": "#4daf4a", "second_order": "#ffd92f", "higher_order": "#e41a1c",
                 "inconsistent": "#984ea3", "undetermined": "#bdbdbd", "failed": "#000000"}


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _panel(row: dict, keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in keys)


def _map_axes(ax, ms, alphas, title):
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(ms)), [str(m) for m in ms])
    ax.set_xlabel("α (spread of the means)")
    ax.set_ylabel("m (components)")
    ax.set_title(title, fontsize=8)


def plot_heatmaps(rows: list[dict], path) -> None:
    """Maps over (m, α), one panel per combination of the PANEL_KEYS the sweep varies. Top row:
    the ε_g deviation (verdict mode) with d̄ and its verdict (✗ deviates), the panel title the
    N(0, I) floor d̄ ± s.e.m. Second row, for a sweep with the matched comparison: the
    three-way class (docs/model.md §10.4), with the Holm class where it differs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = tuple(k for k in PANEL_KEYS if k in ("standardize", "block_size")
                 or len({str(r.get(k, "")) for r in rows}) > 1)
    panels = sorted({_panel(r, keys) for r in rows})
    ms = sorted({int(_num(r.get("m", 1))) for r in rows})
    alphas = sorted({_num(r.get("alpha", 0.0)) for r in rows})
    classes = any(r.get("universality") for r in rows)
    values = [_num(r.get("eg_dev_ode_mean" if r.get("verdict_mode") == "ode"
                         else "eg_dev_ref_mean")) for r in rows]
    finite = [v for v in values if np.isfinite(v)]
    vmax = max(finite) if finite else 1.0
    fig, axes = plt.subplots(2 if classes else 1, len(panels),
                             figsize=(3.6 * len(panels) + 1, 3.8 * (2 if classes else 1)),
                             squeeze=False, constrained_layout=True)
    image = None
    for column, panel in enumerate(panels):
        mine = [(r, v) for r, v in zip(rows, values) if _panel(r, keys) == panel]
        name = ", ".join(f"{k} = {v}" for k, v in zip(keys, panel))
        image = _deviation_panel(axes[0, column], mine, ms, alphas, vmax, name)
        if classes:
            _class_panel(axes[1, column], [r for r, _ in mine], ms, alphas, name)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="ε_g deviation d̄ (✗: deviates)")
    if classes:
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in CLASS_COLOURS.values()]
        fig.legend(handles, list(CLASS_COLOURS), loc="outside lower center", ncol=6,
                   fontsize=8, title="universality (v1 against N(0, I), v2 against the "
                   "matched Gaussian; Holm class in brackets where it differs)",
                   title_fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell_index(row, ms, alphas):
    return ms.index(int(_num(row.get("m", 1)))), alphas.index(_num(row.get("alpha", 0.0)))


def _deviation_panel(ax, mine, ms, alphas, vmax, name):
    grid = np.full((len(ms), len(alphas)), np.nan)
    marks = {}
    floor = ""
    for r, value in mine:
        i, j = _cell_index(r, ms, alphas)
        grid[i, j] = value
        marks[i, j] = r.get("verdict", "")
        key = "floor_ode" if r.get("verdict_mode") == "ode" else "floor_ref"
        floor = f"floor {_num(r.get(key + '_mean')):.3g} ± {_num(r.get(key + '_sem')):.2g}"
    image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    for (i, j), verdict in marks.items():
        text = "fail" if verdict == "failed" else f"{grid[i, j]:.3f}"
        text += " ✗" if verdict == "deviates" else ""
        ax.text(j, i, text, ha="center", va="center", fontsize=7,
                color="white" if not grid[i, j] > 0.6 * vmax else "black")
    _map_axes(ax, ms, alphas, f"{name}\n{floor}")
    return image


def _class_panel(ax, mine, ms, alphas, name):
    from matplotlib.colors import to_rgb
    picture = np.ones((len(ms), len(alphas), 3))
    for r in mine:
        i, j = _cell_index(r, ms, alphas)
        label = "failed" if r.get("verdict") == "failed" else r.get("universality") or ""
        picture[i, j] = to_rgb(CLASS_COLOURS.get(label, "#ffffff"))
        holm = r.get("universality_holm") or ""
        text = label.replace("_", " ") + (f"\n[{holm.replace('_', ' ')}]"
                                          if holm and holm != label else "")
        ax.text(j, i, text, ha="center", va="center", fontsize=6,
                color="white" if label in ("higher_order", "failed") else "black")
    ax.imshow(picture, origin="lower", aspect="auto")
    _map_axes(ax, ms, alphas, f"{name}\nthree-way class")
