"""Figures: a run's trajectories against its theory (ε_g, Q, R, v against log t), and a sweep's
deviation heat maps and three-way class maps over (m, α).

Each figure has a builder that returns the :class:`matplotlib.figure.Figure`
(:func:`comparison_figure`, :func:`heatmap_figure`; no pyplot state, so tests can inspect it)
and a ``plot_*`` function that writes it as a PNG.
"""

from __future__ import annotations

import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: What each ODE theory (fastsgd.theory.THEORIES) is called in legends and labels.
THEORY_NAMES = {"hmm": "N(0, I) HMM ODE", "moments": "moments ODE"}
#: How the ε_g of each kind of theory curve is estimated (docs/model.md §6, §8.1).
THEORY_EG = {"ode": "closed form", "reference": "its eg_mc"}
#: What a comparison plot's bands average over.
BAND_NOTE = "bands: mean ± s.e.m. over the seeds recorded at t"
#: Line style of a mean where fewer than all seeds are recorded.
PARTIAL_STYLE = ":"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path) -> None:
    fig.savefig(path, dpi=110)


def _mean_sem(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and s.e.m. over the seed axis, ignoring NaN rows (diverged or unwritten).

    Parameters
    ----------
    x : numpy.ndarray
        Values with the seed axis first.

    Returns
    -------
    mean, sem, n : numpy.ndarray
        Over the finite values at each position: their mean (NaN where there are none), s.e.m.
        std(ddof=1)/√n (0 where n < 2) and their number n.
    """
    n = np.sum(np.isfinite(x), axis=0)
    # a time where every seed is NaN gives NaN; NumPy's warnings about it say nothing more
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0) if np.isfinite(x).any() else np.full(x.shape[1:], np.nan)
        sem = np.where(n >= 2, np.nanstd(x, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, sem, n


@dataclass(frozen=True)
class SeedStop:
    """A seed whose records end before the run's last record time.

    Attributes
    ----------
    seed_index : int
        The seed's index (/seed_index).
    status : str
        Its /status ("diverged", "interrupted", ...; "ok" when only /n_records is short).
    t_last : float
        Its last recorded time t = step/N; −inf when it has no record.
    t_stop : float
        Where it stopped: /diverged_step / N for a diverged seed, else ``t_last``.
    """

    seed_index: int
    status: str
    t_last: float
    t_stop: float

    @property
    def label(self) -> str:
        """The legend text, e.g. "seed 1 diverged at t = 3.2 (last record t = 3)"."""
        if not np.isfinite(self.t_last):
            return f"seed {self.seed_index} {self.status} before its first record"
        if self.status == "diverged" and self.t_stop != self.t_last:
            return (f"seed {self.seed_index} diverged at t = {self.t_stop:.4g} "
                    f"(last record t = {self.t_last:.4g})")
        if self.status == "ok":
            return f"seed {self.seed_index}: records end at t = {self.t_last:.4g}"
        return f"seed {self.seed_index} {self.status} at t = {self.t_last:.4g}"


def _last_record_times(run) -> np.ndarray:
    """Each seed's last recorded time (−inf where it has no record), from /n_records."""
    n = np.minimum(np.asarray(run.n_records, dtype=np.int64), len(run.t))
    return np.where(n > 0, run.t[np.maximum(n - 1, 0)], -np.inf)


def seed_stops(run) -> list[SeedStop]:
    """The seeds whose data stop early: status not "ok", or fewer /n_records than record times.

    Parameters
    ----------
    run : fastsgd.io.Run
        A loaded run file.

    Returns
    -------
    list of SeedStop
        In the file's seed order; empty when every seed ran to its end.
    """
    last = _last_record_times(run)
    stops = []
    for s, status in enumerate(run.status):
        if status == "ok" and run.n_records[s] >= len(run.t):
            continue
        step = int(run.diverged_step[s])
        t_stop = step / run.config.N if status == "diverged" and step >= 0 else last[s]
        stops.append(SeedStop(int(run.seed_index[s]), str(status), float(last[s]),
                              float(t_stop)))
    return stops


def _recorded(run, times) -> np.ndarray:
    """(S, len(times)) mask: True where ``times`` lie within each seed's records."""
    last = _last_record_times(run)
    return np.asarray(times)[None, :] <= last[:, None] * (1 + 1e-12)


def theory_label(theory) -> str:
    """What a comparison's theory is called: its ODE's name, or "reference run FILE"."""
    if theory.kind == "ode":
        return THEORY_NAMES.get(theory.theory, f"{theory.theory} ODE")
    return f"reference run {Path(theory.source).name}"


class _Curves:
    """The simulation and theory curves of a comparison plot on their times t > 0, each seed
    cut at its last record (the theory too, so that both average over the same seeds)."""

    def __init__(self, run, theory) -> None:
        self.keep, self.theory_keep = run.t > 0, theory.t > 0
        self.t, self.theory_t = run.t[self.keep], theory.t[self.theory_keep]
        self.rows = _recorded(run, run.t)[:, self.keep]
        self.theory_rows = _recorded(run, theory.t)[:, self.theory_keep]
        self.n_seeds = len(run.status)
        self.name = theory_label(theory)
        self.reference = theory.kind == "reference"

    def draw(self, ax, sim, ref, name, color, *, notes=("", "")) -> None:
        """One quantity: the simulation's mean ± s.e.m. band, the theory's mean (a band of its
        own for a reference run); ``notes`` are appended to the two legend labels."""
        self._band(ax, self.t, _cut(sim[:, self.keep], self.rows), color,
                   f"{name} simulation{notes[0]}", "-", 0.3)
        ref = _cut(ref[:, self.theory_keep], self.theory_rows)
        label = f"{name} {self.name}{notes[1]}"
        if self.reference:
            self._band(ax, self.theory_t, ref, color, label, "--", 0.2, hatch="//")
        else:
            self._mean(ax, self.theory_t, _mean_sem(ref), color, label, "--", 1.6)

    def _band(self, ax, t, values, color, label, style, alpha, hatch=None) -> None:
        """Mean ± s.e.m. over the seeds of ``values`` at each t, the band named ``label``."""
        stats = _mean_sem(values)
        mean, sem = stats[0], stats[1]
        ax.fill_between(t, mean - sem, mean + sem, color=color, alpha=alpha, linewidth=0,
                        hatch=hatch, label=label)
        self._mean(ax, t, stats, color, f"_{label} mean", style, 0.9)

    def _mean(self, ax, t, stats, color, label, style, width) -> None:
        """The mean: in ``style`` where every seed is recorded, dotted where fewer are."""
        mean, _, n = stats
        full = n >= self.n_seeds
        partial = ~full | np.r_[~full[1:], False] | np.r_[False, ~full[:-1]]  # joined up
        ax.plot(t, np.where(full, mean, np.nan), color=color, linewidth=width,
                linestyle=style, label=label)
        if not full.all():
            ax.plot(t, np.where(partial, mean, np.nan), color=color, linewidth=width,
                    linestyle=PARTIAL_STYLE, label=f"_{label} (fewer seeds)")


def _cut(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values`` (S, n, ...) with NaN where ``rows`` (S, n) is False."""
    mask = rows.reshape(rows.shape + (1,) * (values.ndim - 2))
    return np.where(mask, values, np.nan)


def comparison_figure(run, theory, *, title: str | None = None):
    """Four panels against t (log scale): ε_g, Q, R and v of a run and its theory.

    Parameters
    ----------
    run : fastsgd.io.Run
        The simulation, drawn as mean ± s.e.m. bands over the seeds recorded at each t (the
        mean dotted where fewer than all seeds are); ε_g is its eg_mc (test-set Monte Carlo).
    theory : fastsgd.theory.TheoryCurves
        An ODE (mean line over the same seeds; its ε_g in closed form) or a reference run (a
        hatched band of its own, its ε_g its eg_mc). Against the moments theory the Q and R
        panels show the run's empirical fields, which that theory predicts.
    title : str, optional
        Replaces the default title (the run's name and configuration).

    Returns
    -------
    matplotlib.figure.Figure
        Every seed that stopped early (:func:`seed_stops`) is marked by a vertical line at its
        last record in each panel, named in the ε_g panel's legend.
    """
    cfg = run.config
    curves = _Curves(run, theory)
    fig = _figure(11, 8)
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    curves.draw(ax, run.eg_mc, theory.eg, "ε_g", _colours()[0],
                notes=(" (eg_mc)", f" ({THEORY_EG[theory.kind]})"))
    ax.set_yscale("log")
    ax.set_ylabel("ε_g: eg_mc, test-set Monte Carlo (simulation)")
    _field_panels(axes, curves, run, theory)
    _mark_stops(axes, seed_stops(run))
    for position, ax in enumerate(axes.flat):
        ax.set_xscale("log")
        ax.set_xlabel("t = steps / N")
        ax.legend(fontsize=7, ncol=1 if position == 0 else 2)   # ε_g: long labels
    n_seeds = len(run.status)
    fig.suptitle((title or (
        f"{run.path.name} vs {curves.name}: N={cfg.N}, D={cfg.D}, K={cfg.K}, M={cfg.M}, "
        f"m={cfg.m}, α={cfg.alpha:g}, {cfg.standardize}, f={cfg.f}, g={cfg.g}, "
        f"lr={cfg.lr:g}, {n_seeds} seed{'s' if n_seeds > 1 else ''}"))
        + f"\n{BAND_NOTE} (of {n_seeds}; the mean dotted where fewer)", fontsize=9)
    return fig


def _field_panels(axes, curves: _Curves, run, theory) -> None:
    """The Q, R and v panels (up to 10 entries each); against the moments theory, Q and R are
    the run's empirical fields, which that theory predicts (docs/model.md §10.5)."""
    cfg = run.config
    if theory.kind == "ode" and theory.theory == "moments":
        Q, R, op = run.empirical["Q"], run.empirical["R"], "empirical "
    else:
        Q, R, op = run.Q, run.R, ""
    colors = _colours()
    panels = [(axes[0, 1], "Q", Q, theory.Q, [(k, l) for k in range(cfg.K)
                                              for l in range(k, cfg.K)]),
              (axes[1, 0], "R", R, theory.R, [(k, n) for k in range(cfg.K)
                                              for n in range(cfg.M)])]
    for ax, name, sim, ref, entries in panels:
        for c, (i, j) in enumerate(entries[:10]):
            curves.draw(ax, sim[..., i, j], ref[..., i, j], f"{name}{i}{j}",
                        colors[c % len(colors)])
        ax.set_ylabel(op + name)
    for k in range(min(cfg.K, 10)):
        curves.draw(axes[1, 1], run.v[..., k], theory.v[..., k], f"v{k}",
                    colors[k % len(colors)])
    axes[1, 1].set_ylabel("v")


def _colours() -> list[str]:
    import matplotlib
    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


#: Line colour of a stopped seed's marker, by status (others: grey).
STOP_COLOURS = {"diverged": "#d62728", "interrupted": "#ff7f0e"}


def _mark_stops(axes, stops: list[SeedStop]) -> None:
    """A vertical line at each stopped seed's last record in every panel (where t > 0 can be
    drawn on the log axis), named in the first panel's legend."""
    for stop in stops:
        colour = STOP_COLOURS.get(stop.status, "#7f7f7f")
        for position, ax in enumerate(axes.flat):
            label = stop.label if position == 0 else f"_{stop.label}"
            if stop.t_last > 0:
                ax.axvline(stop.t_last, color=colour, linestyle="-.", linewidth=1.2,
                           label=label)
            elif position == 0:   # nothing to draw on a log axis: the legend still says it
                ax.plot([], [], color=colour, linestyle="-.", label=label)


def plot_comparison(run, theory, path, *, title: str | None = None) -> None:
    """Write :func:`comparison_figure` of ``run`` and ``theory`` as a PNG at ``path``.

    Parameters
    ----------
    run : fastsgd.io.Run
        The simulation.
    theory : fastsgd.theory.TheoryCurves
        Its ODE or reference run.
    path : str or pathlib.Path
        The PNG to write.
    title : str, optional
        Replaces the default title.
    """
    _save(comparison_figure(run, theory, title=title), path)


#: Grid keys that split a sweep's maps into panels (the last two always, the others where
#: the sweep varies them).
PANEL_KEYS = ("means", "teacher", "latent", "standardize", "block_size")
#: Colours of the three-way classes of docs/model.md §10.4 (and of failed cells).
CLASS_COLOURS = {"gaussian": "#4daf4a", "second_order": "#ffd92f", "higher_order": "#e41a1c",
                 "inconsistent": "#984ea3", "undetermined": "#bdbdbd", "failed": "#000000"}


@dataclass(frozen=True)
class Deviation:
    """An ε_g deviation d̄ of summary.csv that a heat map can show (docs/model.md §8.5).

    Attributes
    ----------
    column : str
        The prefix of its ``_mean`` and ``_sem`` columns (mean and s.e.m. over seeds).
    floor : str
        The prefix of its N(0, I) or matched floor's columns.
    verdict : str
        Its verdict column.
    against : str
        What d̄ measures the cell against.
    """

    column: str
    floor: str
    verdict: str
    against: str


#: The deviations of summary.csv by what they are measured against (§8.5, §10.4, §10.5).
DEVIATIONS = {
    "ode": Deviation("eg_dev_ode", "floor_ode", "verdict", THEORY_NAMES["hmm"]),
    "reference": Deviation("eg_dev_ref", "floor_ref", "verdict_ref", "N(0, I) reference run"),
    "moments": Deviation("eg_dev_moments", "floor_moments", "verdict_moments",
                         THEORY_NAMES["moments"]),
    "matched": Deviation("eg_dev_matched", "floor_matched", "verdict_matched",
                         "matched-Gaussian reference run"),
}
#: The choices of heatmap_figure's ``against``: "verdict" is each cell's verdict mode (the
#: HMM ODE where one applies, else the N(0, I) reference run).
AGAINST = ("verdict", "reference", "moments", "matched")
#: What a cell's verdict adds to its text.
VERDICT_FLAGS = {"deviates": " ✗", "undetermined": " ?"}
#: Marks of the cells measured against other than a figure's most common theory.
SOURCE_MARKS = ("", "†", "‡", "§")


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


def _deviation_key(row: dict, against: str) -> str:
    """The key of DEVIATIONS that a row's d̄ is read from."""
    if against != "verdict":
        return against
    return "ode" if row.get("verdict_mode") == "ode" else "reference"


def _source_marks(rows: list[dict], sources: list[str]) -> dict[str, str]:
    """A mark per deviation source of the finished cells: none for the most common one."""
    finished = [s for r, s in zip(rows, sources) if r.get("verdict") != "failed"]
    ranked = sorted(set(finished), key=lambda s: (-finished.count(s), s))
    return dict(zip(ranked, SOURCE_MARKS))


def _against_text(marks: dict[str, str]) -> str:
    """E.g. "d̄ vs N(0, I) HMM ODE; † vs N(0, I) reference run"."""
    if not marks:
        return "d̄ (no cell finished)"
    return "d̄ " + "; ".join(f"{mark + ' ' if mark else ''}vs {DEVIATIONS[s].against}"
                            for s, mark in marks.items())


def heatmap_figure(rows: list[dict], *, against: str = "verdict"):
    """Maps over (m, α) of a sweep's summary rows, one panel per combination of the
    PANEL_KEYS the sweep varies.

    Parameters
    ----------
    rows : list of dict
        summary.csv rows (strings, as read back, or the values of fastsgd.sweep.summarise).
    against : {"verdict", "reference", "moments", "matched"}
        Which ε_g deviation the top row shows (DEVIATIONS): each cell's verdict mode (the
        N(0, I) HMM ODE where one applies, else the N(0, I) reference run; cells of the
        less common one are marked †), the N(0, I) reference run, the moments ODE or the
        matched-Gaussian reference run.

    Returns
    -------
    matplotlib.figure.Figure
        Top row: each cell's d̄ ± s.e.m. over seeds with its verdict (✗ deviates,
        ? undetermined), each panel's title its floor's d̄ ± s.e.m., the colour bar and the
        title what d̄ is measured against. Second row, for a sweep with the matched
        comparison: the three-way class (docs/model.md §10.4), with the Holm class where it
        differs.
    """
    if against not in AGAINST:
        raise ValueError(f"against must be one of {', '.join(AGAINST)}, got {against!r}")
    keys = tuple(k for k in PANEL_KEYS if k in ("standardize", "block_size")
                 or len({str(r.get(k, "")) for r in rows}) > 1)
    panels = sorted({_panel(r, keys) for r in rows})
    ms = sorted({int(_num(r.get("m", 1))) for r in rows})
    alphas = sorted({_num(r.get("alpha", 0.0)) for r in rows})
    classes = any(r.get("universality") for r in rows)
    sources = [_deviation_key(r, against) for r in rows]
    marks = _source_marks(rows, sources)
    finite = [v for v in (_num(r.get(DEVIATIONS[s].column + "_mean"))
                          for r, s in zip(rows, sources)) if np.isfinite(v)]
    vmax = max(finite) if finite else 1.0
    fig = _figure(3.6 * len(panels) + 1, 3.8 * (2 if classes else 1) + 0.5)
    axes = fig.subplots(2 if classes else 1, len(panels), squeeze=False)
    image = None
    for column, panel in enumerate(panels):
        mine = [(r, s) for r, s in zip(rows, sources) if _panel(r, keys) == panel]
        name = ", ".join(f"{k} = {v}" for k, v in zip(keys, panel))
        image = _deviation_panel(axes[0, column], mine, (ms, alphas, vmax), name, marks)
        if classes:
            _class_panel(axes[1, column], [r for r, _ in mine], ms, alphas, name)
    against_text = _against_text(marks)
    if image is not None:
        bar = fig.colorbar(image, ax=axes[0].tolist())
        bar.set_label(f"ε_g deviation {against_text}", fontsize=8)
    fig.suptitle(textwrap.fill(
        f"ε_g deviation (eg_mc) {against_text}. Cells: d̄ ± s.e.m. over seeds (✗ deviates "
        "from the floor, ? undetermined); titles: the floor's d̄ ± s.e.m. against the same",
        width=int(16 * fig.get_figwidth())), fontsize=8)
    if classes:
        _class_legend(fig)
    return fig


def _class_legend(fig) -> None:
    from matplotlib.patches import Patch
    handles = [Patch(color=c) for c in CLASS_COLOURS.values()]
    fig.legend(handles, list(CLASS_COLOURS), loc="outside lower center", ncol=6,
               fontsize=8, title="universality (v1 against N(0, I), v2 against the "
               "matched Gaussian; Holm class in brackets where it differs)",
               title_fontsize=8)


def plot_heatmaps(rows: list[dict], path, *, against: str = "verdict") -> None:
    """Write :func:`heatmap_figure` of a sweep's summary ``rows`` as a PNG at ``path``.

    Parameters
    ----------
    rows : list of dict
        summary.csv rows.
    path : str or pathlib.Path
        The PNG to write.
    against : {"verdict", "reference", "moments", "matched"}
        Which ε_g deviation the maps show (see :func:`heatmap_figure`).
    """
    _save(heatmap_figure(rows, against=against), path)


def _cell_index(row, ms, alphas):
    return ms.index(int(_num(row.get("m", 1)))), alphas.index(_num(row.get("alpha", 0.0)))


def _cell_text(row: dict, deviation: Deviation, mark: str) -> str:
    """A heat-map cell's text: "d̄ ✗" over "± s.e.m.", "fail", or "n/a" (no d̄)."""
    if row.get("verdict") == "failed":
        return "fail"
    mean = _num(row.get(deviation.column + "_mean"))
    if not np.isfinite(mean):
        return f"{mark}n/a"
    flag = VERDICT_FLAGS.get(row.get(deviation.verdict, ""), "")
    return f"{mark}{mean:.3g}{flag}\n± {_num(row.get(deviation.column + '_sem')):.2g}"


def _deviation_panel(ax, mine, scale, name, marks):
    """One map of d̄ from (row, source) pairs ``mine``; ``scale`` is (ms, alphas, vmax)."""
    ms, alphas, vmax = scale
    grid = np.full((len(ms), len(alphas)), np.nan)
    floors = {}
    for r, source in mine:
        deviation = DEVIATIONS[source]
        grid[_cell_index(r, ms, alphas)] = _num(r.get(deviation.column + "_mean"))
        floor = _num(r.get(deviation.floor + "_mean"))
        if np.isfinite(floor) and source not in floors:   # one floor run per panel (§10.4)
            floors[source] = (f"{marks.get(source, '')}floor {floor:.3g} ± "
                              f"{_num(r.get(deviation.floor + '_sem')):.2g}")
    image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    for r, source in mine:
        i, j = _cell_index(r, ms, alphas)
        ax.text(j, i, _cell_text(r, DEVIATIONS[source], marks.get(source, "")), ha="center",
                va="center", fontsize=7, color="white" if not grid[i, j] > 0.6 * vmax
                else "black")
    _map_axes(ax, ms, alphas, "\n".join([name, *(floors[s] for s in marks if s in floors)]))
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
