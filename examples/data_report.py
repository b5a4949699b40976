"""Tables of the real-data study for docs/universality.md (docs/model.md §11).

    fastsgd latents patches --out data/patches.npy
    fastsgd sweep examples/universality_data.toml --out data/universality_data
    python examples/data_report.py data/universality_data [more sweep folders]

Prints one Markdown table per sweep folder: every cell (a standardization of the data latent,
centred or not) against the N(0, I) HMM ODE, against the N(0, I) reference run, against its
matched twin (the Gaussian with the standardized data's mean and covariance) and against the
moments theory on its own input moments, each beside its floor, with the three-way class; then
the latent's and the fields' shape (excess kurtosis) per cell.
"""

from __future__ import annotations

import sys
from pathlib import Path

from matched_report import judged, pm   # examples/ is on the path when run as a script
from moments_report import moments_cell
from universality_report import num, read


def cell_table(rows: list[dict], title: str) -> None:
    print(f"{title}: d̄ ± s.e.m. of eg_mc (✗ deviates by §6's rule)\n")
    print("| N | standardize | centred | vs N(0, I) ODE | its floor | vs N(0, I) reference | its "
          "floor | vs matched twin | its floor | vs moments ODE | its floor | class (Holm) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['N']} | {r['standardize']} | {r['center_inputs']} | "
              f"{judged(r, 'ode')} | {pm(r, 'floor_ode')} | "
              f"{judged(r, 'ref')} | {pm(r, 'floor_ref')} | "
              f"{judged(r, 'matched')} | "
              f"{pm(r, 'floor_matched')} | {moments_cell(r)} | {pm(r, 'floor_moments')} | "
              f"{r['universality']} ({r['universality_holm']}) |")
    print()


def shape_table(rows: list[dict]) -> None:
    print("Field shape per cell: excess kurtosis of the teacher field ν₀ on the test set, the "
          "most extreme over the teacher's fields, and of the student fields at the end\n")
    print("| N | standardize | centred | ν₀ | most extreme ν | λ at t_max |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['N']} | {r['standardize']} | {r['center_inputs']} | "
              f"{num(r['nu0_kurtosis']):.3g} | "
              f"{num(r['nu_kurtosis_extreme']):.3g} | {num(r['lambda_kurtosis_end']):.3g} |")
    print()


def main(folders: list[str]) -> None:
    for folder in folders:
        rows = read(Path(folder))
        cell_table(rows, f"{folder} (D = {rows[0]['D']}, {rows[0]['seeds']} seeds)")
        shape_table(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
