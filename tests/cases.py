"""A pairwise covering set of kernel options (docs/model.md §7.1)."""

from __future__ import annotations

import itertools

OPTIONS = {
    "f": ["sign", "erf", "linear", "relu", "tanh"],
    "g": ["erf", "relu", "linear"],
    "standardize": ["none", "sample", "population", "whiten"],
    "train_second_layer": [True, False],
    "m": [1, 3],
    "block_size": [1, 4, None],
}


def pairwise_cases() -> list[dict]:
    """Greedy covering set: every value of every option, and every pair of values of two
    options, occurs in at least one case. Deterministic."""
    names = list(OPTIONS)
    uncovered = {(a, va, b, vb) for a, b in itertools.combinations(names, 2)
                 for va in OPTIONS[a] for vb in OPTIONS[b]}
    candidates = [dict(zip(names, values)) for values in itertools.product(*OPTIONS.values())]
    chosen = []
    while uncovered:
        def gain(case):
            return sum((a, case[a], b, case[b]) in uncovered
                       for a, b in itertools.combinations(names, 2))
        best = max(candidates, key=gain)
        chosen.append(best)
        uncovered -= {(a, best[a], b, best[b]) for a, b in itertools.combinations(names, 2)}
    return chosen


def case_id(case: dict) -> str:
    B = case["block_size"] if case["block_size"] is not None else "D"
    layers = "both" if case["train_second_layer"] else "first"
    return f"{case['f']}-{case['g']}-{case['standardize']}-{layers}-m{case['m']}-B{B}"
