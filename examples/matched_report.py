"""Tables and figures of the matched-moments study for docs/universality.md.

    fastsgd sweep examples/universality_matched.toml --out data/universality_matched
    fastsgd sweep examples/universality_scalar.toml --out data/universality_scalar
    fastsgd sweep examples/universality_aligned.toml --out data/universality_aligned
    python examples/matched_report.py data/universality_matched data/universality_scalar \
        data/universality_aligned docs/figures

Prints Markdown tables: the scalar reading against the N(0, I) ODE, the matched comparison of
chosen cells, the aligned-teacher cells, the three-way classes per standardization and block size,
and the claim's status per reading and per notion of "Gaussian"; writes the maps of each sweep,
one figure per block size.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from analysis.deviation import UNIVERSALITY_CLASSES
from fastsgd.sampling import STANDARDIZATIONS
from universality_report import num, read   # examples/ is on the path when run as a script

CLASSES = (*UNIVERSALITY_CLASSES.values(), "undetermined")


def pm(row: dict, prefix: str) -> str:
    return f"{num(row[prefix + '_mean']):.3f} ± {num(row[prefix + '_sem']):.3f}"


def mark(verdict: str) -> str:
    return {"deviates": " ✗", "matches": "", "failed": " failed"}.get(verdict, " ?")


#: The verdict column of each comparison whose deviation is eg_dev_<comparison>.
VERDICTS = {"ode": "verdict", "ref": "verdict_ref", "matched": "verdict_matched",
            "moments": "verdict_moments"}


def judged(row: dict, against: str) -> str:
    """d̄ ± s.e.m. of eg_mc against ``against`` (a key of VERDICTS), marked ✗ if it deviates."""
    return pm(row, f"eg_dev_{against}") + mark(row[VERDICTS[against]])


def same(text, value) -> bool:
    """A summary field (numbers written with 6 significant digits) against a value."""
    if isinstance(value, (int, float)):
        return num(text) == value
    return text == str(value)


def find(rows, **values) -> list[dict]:
    return [r for r in rows if all(same(r.get(k), v) for k, v in values.items())]


def scalar_against_ode(rows: list[dict]) -> None:
    print("Scalar means, B = D: d̄ ± s.e.m. against the N(0, I) ODE (✗ deviates); floor "
          f"{pm(rows[0], 'floor_ode')}\n")
    alphas = sorted({num(r["alpha"]) for r in rows})
    print("| standardize | m | " + " | ".join(f"α = {a:g}" for a in alphas) + " |")
    print("|---|---|" + "---|" * len(alphas))
    for std in STANDARDIZATIONS:
        for m in sorted({int(num(r["m"])) for r in rows}):
            cells = [find(rows, standardize=std, m=m, alpha=a, block_size="D") for a in alphas]
            if not all(cells):
                continue
            print(f"| {std} | {m} | " + " | ".join(
                judged(c[0], "ode") for c in cells) + " |")
    print()


def matched_cells(rows: list[dict], title: str) -> None:
    print(f"{title}\n")
    print("| standardize | B | m | α | d vs ODE | d vs N(0, I) ref | floor | d vs matched "
          "| matched floor | class (Holm) | ν₀ kurtosis |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['standardize']} | {r['block_size']} | {r['m']} | {r['alpha']} | "
              f"{judged(r, 'ode')} | "
              f"{judged(r, 'ref')} | {pm(r, 'floor_ref')} | "
              f"{judged(r, 'matched')} | "
              f"{pm(r, 'floor_matched')} | {r['universality']} ({r['universality_holm']}) | "
              f"{num(r['nu0_kurtosis']):.2f} |")
    print()


def class_counts(rows: list[dict], reading: str) -> None:
    print(f"{reading}: three-way classes per standardization and B (plain / Holm)\n")
    print("| standardize | B | " + " | ".join(CLASSES) + " |")
    print("|---|---|" + "---|" * len(CLASSES))
    for std in STANDARDIZATIONS:
        for block in ("D", "1"):
            subset = find(rows, standardize=std, block_size=block)
            if not subset:
                continue
            plain = Counter(r["universality"] for r in subset)
            holm = Counter(r["universality_holm"] for r in subset)
            print(f"| {std} | {block} | " + " | ".join(
                f"{plain[c]} / {holm[c]}" for c in CLASSES) + " |")
    print()


def claim_status(readings: dict[str, list[dict]]) -> None:
    print("The claim \"standardized ⇒ Gaussian\": cells that match, per reading and notion of "
          "Gaussian (standardized cells only; plain / Holm)\n")
    print("| reading | standardize | B | matches N(0, I) | matches the matched twin | cells |")
    print("|---|---|---|---|---|---|")
    for reading, rows in readings.items():
        for std in STANDARDIZATIONS[1:]:
            for block in ("D", "1"):
                subset = find(rows, standardize=std, block_size=block)
                if not subset:
                    continue
                v1 = sum(r["verdict_ref"] == "matches" for r in subset)
                v1h = sum(r["verdict_ref_holm"] == "matches" for r in subset)
                v2 = sum(r["verdict_matched"] == "matches" for r in subset)
                v2h = sum(r["verdict_matched_holm"] == "matches" for r in subset)
                print(f"| {reading} | {std} | {block} | {v1} / {v1h} | {v2} / {v2h} | "
                      f"{len(subset)} |")
    print()


def main(vector: Path, scalar: Path, aligned: Path, figures: Path) -> None:
    from fastsgd.plots import plot_heatmaps
    tables = {"vector": read(vector), "scalar": read(scalar), "aligned": read(aligned)}
    for name, rows in tables.items():   # one figure per block size: four panels wide
        for block in sorted({r["block_size"] for r in rows}):
            plot_heatmaps(find(rows, block_size=block), figures / f"matched_{name}_B{block}.png")
    scalar_against_ode(find(tables["scalar"], block_size="D"))
    matched_cells(find(tables["vector"], m=8, alpha=2.0, block_size="D"),
                  "Vector means, m = 8, α = 2, B = D: the matched comparison")
    matched_cells(find(tables["scalar"], m=8, alpha=2.0, block_size="D"),
                  "Scalar means, m = 8, α = 2, B = D: the matched comparison")
    matched_cells(tables["aligned"], "Aligned teacher, whiten, B = D")
    class_counts(tables["vector"], "Vector means")
    class_counts(tables["scalar"], "Scalar means")
    claim_status({"vector": tables["vector"], "scalar": tables["scalar"]})


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:5]))
