"""Tables of the moments-theory study for docs/universality.md (docs/model.md §10.5).

    fastsgd sweep examples/universality_moments.toml --out data/universality_moments
    fastsgd sweep examples/universality_centred.toml --out data/universality_centred
    python examples/moments_report.py data/universality_moments data/universality_centred

Prints Markdown tables: the m = 8, α = 2, B = D cells against the N(0, I) HMM ODE and against the
moments theory, beside their floors; what centring alone changes (the centred and the uncentred
run share every random number, so their difference is the centring's); and, for the centred
grid, the moments verdict per three-way class and the cells one by one.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from analysis.deviation import aggregate, eg_deviation
from matched_report import CLASSES, judged, pm   # examples/ is on the path as a script
from universality_report import num, read


def moments_cell(r: dict) -> str:
    if r["verdict_moments"] == "unavailable":
        reason = r["moments_unavailable"].split(" (")[0]
        return "refused: " + reason.replace("the inputs have ", "")
    return judged(r, "moments")


def focus_table(rows: list[dict]) -> None:
    print("m = 8, α = 2, B = D, vector means: d̄ ± s.e.m. (✗ deviates)\n")
    print("| teacher | standardize | centred | d vs N(0, I) ODE | its floor | d vs moments ODE "
          "| its floor | matched twin vs moments ODE | class (Holm) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['teacher']} | {r['standardize']} | {r['center_inputs']} | "
              f"{judged(r, 'ode')} | {pm(r, 'floor_ode')} | "
              f"{moments_cell(r)} | {pm(r, 'floor_moments')} | {pm(r, 'matched_dev_moments')} | "
              f"{r['universality']} ({r['universality_holm']}) |")
    print()


def centring_effect(folder: Path) -> None:
    """d between each uncentred cell and its centred twin (same random numbers), eg_mc."""
    import fastsgd
    runs = {}
    for path in sorted((folder / "runs").glob("cell-*.h5")):
        run = fastsgd.load(path)
        cfg = run.config
        runs[(cfg.teacher, cfg.standardize, cfg.center_inputs)] = run
    print("What centring alone changes: d(uncentred, centred) on eg_mc, paired by seed "
          "(the same random numbers)\n")
    print("| teacher | standardize | ‖E x‖² | largest mean field w_k·E x/√N at t = 0 | "
          "d̄ ± s.e.m. |")
    print("|---|---|---|---|---|")
    for (teacher, std, centred), run in sorted(runs.items()):
        if not centred:
            continue
        plain = runs[(teacher, std, False)]
        d = np.array([eg_deviation(plain.t, plain.eg_mc[s], run.t, run.eg_mc[s])
                      for s in range(len(run.status))])
        agg = aggregate(d)
        print(f"| {teacher} | {std} | {float(run.input_mean[0] @ run.input_mean[0]):.3g} | "
              f"{float(np.abs(run.mean_fields[:, 0]).max()):.3g} | "
              f"{agg.mean:.2g} ± {agg.sem:.1g} |")
    print()


def class_against_moments(rows: list[dict]) -> None:
    print("Centred grid: the moments verdict per three-way class (plain classes; cells)\n")
    print("| three-way class | moments theory matches | deviates | cells |")
    print("|---|---|---|---|")
    for cls in CLASSES:
        subset = [r for r in rows if r["universality"] == cls]
        if subset:
            verdicts = Counter(r["verdict_moments"] for r in subset)
            print(f"| {cls} | {verdicts['matches']} | {verdicts['deviates']} | {len(subset)} |")
    print()


def centred_cells(rows: list[dict]) -> None:
    print("Centred grid, every cell (✗ deviates; moments_error: the largest estimated Monte "
          "Carlo error of the theory's ε_g, '-' for exact moments)\n")
    print("| standardize | B | m | α | d vs N(0, I) ODE | d vs moments ODE | moments floor | "
          "moments error | class (Holm) | moments (Holm) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["standardize"], r["block_size"] != "D",
                                         num(r["m"]), num(r["alpha"]))):
        error = num(r["moments_error"])
        print(f"| {r['standardize']} | {r['block_size']} | {r['m']} | {r['alpha']} | "
              f"{judged(r, 'ode')} | {moments_cell(r)} | "
              f"{pm(r, 'floor_moments')} | {'-' if error != error else f'{error:.1g}'} | "
              f"{r['universality']} ({r['universality_holm']}) | "
              f"{r.get('verdict_moments_holm', '')} |")
    print()


def main(focus: Path, centred: Path | None) -> None:
    focus_table(read(focus))
    centring_effect(focus)
    if centred is not None:
        rows = read(centred)
        class_against_moments(rows)
        centred_cells(rows)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python examples/moments_report.py MOMENTS_DIR [CENTRED_DIR]")
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None)
