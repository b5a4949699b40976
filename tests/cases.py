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
    "means": ["vector", "scalar"],
    "latent": ["mixture", "matched_gaussian"],
    "teacher": ["random", "aligned"],
}


def valid(case: dict) -> bool:
    """Combinations SimConfig accepts (docs/model.md §10.3: an aligned teacher needs m > 1, and
    not scalar means with `sample` and B = D)."""
    if case["teacher"] == "aligned":
        return case["m"] > 1 and not (case["means"] == "scalar" and case["standardize"] ==
                                      "sample" and case["block_size"] is None)
    return True


def pairwise_cases() -> list[dict]:
    """Greedy covering set of the valid combinations: every value of every option, and every
    pair of values of two options that some valid case holds, occurs in at least one case.
    Deterministic."""
    names = list(OPTIONS)
    candidates = [case for values in itertools.product(*OPTIONS.values())
                  if valid(case := dict(zip(names, values)))]
    uncovered = {(a, case[a], b, case[b]) for case in candidates
                 for a, b in itertools.combinations(names, 2)}
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
    return (f"{case['f']}-{case['g']}-{case['standardize']}-{layers}-m{case['m']}-B{B}-"
            f"{case['means']}-{case['latent']}-{case['teacher']}")
