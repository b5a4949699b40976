"""Tables and figures of the universality study for docs/universality.md.

    fastsgd sweep examples/universality.toml --out data/universality
    fastsgd sweep examples/finite_size.toml --out data/finite_size
    python examples/universality_report.py data/universality data/finite_size docs/figures
    python examples/universality_report.py data/universality data/finite_size docs/figures \
        data/universality_relu     # adds the g = relu row

Prints Markdown tables (the deviation d̄ of each cell and its verdict, counts per
standardization, the finite-size exponents) and writes small PNGs into the figures folder.
"""

from __future__ import annotations

import csv
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np


def read(path: Path) -> list[dict]:
    with open(path / "summary.csv") as fh:
        return list(csv.DictReader(fh))


def num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def main_grid(rows: list[dict], figures: Path) -> None:
    from fastsgd.plots import plot_heatmaps
    for block in sorted({r["block_size"] for r in rows}):
        subset = [r for r in rows if r["block_size"] == block]
        name = "D" if block == "D" else block
        plot_heatmaps(subset, figures / f"universality_B{name}.png")
    floor = rows[0]
    print(f"Gaussian floor (N = {floor['N']}, {floor['seeds']} seeds): d̄ = "
          f"{num(floor['floor_ode_mean']):.4f} ± {num(floor['floor_ode_sem']):.4f}\n")
    print("| standardize | B | matches | deviates | deviates (Holm) | median d̄ | max d̄ |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for std in ("none", "sample", "population", "whiten"):
        for block in ("D", "1"):
            subset = [r for r in rows if r["standardize"] == std and r["block_size"] == block]
            if not subset:
                continue
            c = Counter(r["verdict"] for r in subset)
            holm = sum(r.get("verdict_holm") == "deviates" for r in subset)
            d = [num(r["eg_dev_ode_mean"]) for r in subset]
            print(f"| {std} | {block} | {c['matches']} | {c['deviates']} | {holm} | "
                  f"{np.nanmedian(d):.3f} | {np.nanmax(d):.3f} |")
    print()
    alphas = sorted({num(r["alpha"]) for r in rows})
    for std in ("none", "sample", "population", "whiten"):
        for block in ("D", "1"):
            subset = {(int(r["m"]), num(r["alpha"])): r for r in rows
                      if r["standardize"] == std and r["block_size"] == block}
            if not subset:
                continue
            print(f"**standardize = {std}, B = {block}**: d̄ against the ODE (✗ deviates)\n")
            print("| m \\ α | " + " | ".join(f"{a:g}" for a in alphas) + " |")
            print("|---|" + "---:|" * len(alphas))
            for m in sorted({k[0] for k in subset}):
                cells = []
                for a in alphas:
                    r = subset.get((m, a))
                    cells.append("" if r is None else f"{num(r['eg_dev_ode_mean']):.3f}"
                                 + (" ✗" if r["verdict"] == "deviates" else ""))
                print(f"| {m} | " + " | ".join(cells) + " |")
            print()


def finite_size(rows: list[dict], figures: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    print("| curve | " + " | ".join(f"N = {n}" for n in sorted({int(r['N']) for r in rows}))
          + " | exponent |")
    print("|---|" + "---:|" * (len({r['N'] for r in rows}) + 1))
    series = {}
    for std in ("none", "sample", "population", "whiten"):
        subset = sorted((r for r in rows if r["standardize"] == std), key=lambda r: int(r["N"]))
        series[f"m=8, α=2, {std}"] = [(int(r["N"]), num(r["eg_dev_ode_mean"]),
                                      num(r["eg_dev_ode_sem"])) for r in subset]
    floor = {}
    for r in rows:
        floor[int(r["N"])] = (num(r["floor_ode_mean"]), num(r["floor_ode_sem"]))
    series["Gaussian floor"] = [(n, *floor[n]) for n in sorted(floor)]
    for label, points in series.items():
        N = np.array([p[0] for p in points], dtype=float)
        d = np.array([p[1] for p in points])
        s = np.array([p[2] for p in points])
        slope = np.polyfit(np.log(N), np.log(d), 1)[0]
        ax.errorbar(N, d, yerr=s, marker="o", capsize=2, label=f"{label} (slope {slope:.2f})")
        print(f"| {label} | " + " | ".join(f"{v:.4f} ± {e:.4f}" for v, e in zip(d, s))
              + f" | {slope:.2f} |")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (D = N/2)")
    ax.set_ylabel("ε_g deviation from the ODE")
    ax.legend(fontsize=6)
    fig.savefig(figures / "finite_size.png", dpi=90)
    plt.close(fig)


def relu_row(relu_rows: list[dict], erf_rows: list[dict], figures: Path) -> None:
    """The g = relu row (m = 8, B = D) beside the same row of the erf study."""
    from fastsgd.plots import plot_heatmaps
    plot_heatmaps(relu_rows, figures / "universality_relu_BD.png")
    floor = relu_rows[0]
    print(f"g = relu, Gaussian floor: d̄ = {num(floor['floor_ode_mean']):.4f} ± "
          f"{num(floor['floor_ode_sem']):.4f}\n")
    alphas = sorted({num(r["alpha"]) for r in relu_rows})
    print("| g | standardize | " + " | ".join(f"α = {a:g}" for a in alphas) + " |")
    print("|---|---|" + "---:|" * len(alphas))
    for std in ("none", "sample", "population", "whiten"):
        for g, rows in (("erf", erf_rows), ("relu", relu_rows)):
            cells = {num(r["alpha"]): r for r in rows if r["standardize"] == std
                     and r["block_size"] == "D" and int(r["m"]) == 8}
            if not cells:
                continue
            print(f"| {g} | {std} | " + " | ".join(
                "" if a not in cells else f"{num(cells[a]['eg_dev_ode_mean']):.3f} ± "
                f"{num(cells[a]['eg_dev_ode_sem']):.3f}"
                + (" ✗" if cells[a]["verdict"] == "deviates" else "") for a in alphas) + " |")
    print()


if __name__ == "__main__":
    grid_dir, series_dir, figures = (Path(p) for p in sys.argv[1:4])
    figures.mkdir(parents=True, exist_ok=True)
    main_grid(read(grid_dir), figures)
    if (series_dir / "summary.csv").exists():
        finite_size(read(series_dir), figures)
    if len(sys.argv) > 4:
        relu_row(read(Path(sys.argv[4])), read(grid_dir), figures)
