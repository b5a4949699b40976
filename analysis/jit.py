"""The compile options of every numba kernel in fastsgd and analysis, in one place.

Every kernel is cached on disk (``cache=True``: the compile cost is paid once per
installation) and releases the GIL (``nogil=True``: seeds run in parallel threads). Two
families differ in one option:

- :func:`kernel` (the simulator's kernels and the activations both sides share): Python's error
  model, so a division by zero is a bug that raises;
- :func:`theory_kernel`: NumPy's error model (x/0 = ±inf or NaN), so that a degenerate state is
  detected by the ODE's finiteness checks (docs/model.md §5.5) instead of raising inside
  compiled code.

``reassociate=True`` lets LLVM reorder sums and fuse multiply-adds (vectorised loops) in an
order fixed by the compiled code, so results still do not depend on the thread count; no flag
that assumes finite values is ever set, so NaN and inf reach every divergence and failure check.
"""

from __future__ import annotations

from numba import njit

__all__ = ["REASSOCIATE", "kernel", "theory_kernel"]

#: The only fast-math flags used anywhere: reassociation and contraction (FMA).
REASSOCIATE = frozenset({"reassoc", "contract"})


def _options(inline: bool, reassociate: bool) -> dict:
    options: dict = {"cache": True, "nogil": True}
    if inline:
        options["inline"] = "always"
    if reassociate:
        options["fastmath"] = set(REASSOCIATE)  # numba wants a (mutable) set
    return options


def kernel(*, inline: bool = False, reassociate: bool = False):
    """``@njit`` for the simulator's kernels (sampling, SGD, observables) and activations."""
    return njit(**_options(inline, reassociate))


def theory_kernel(*, inline: bool = False, reassociate: bool = False):
    """``@njit`` for the theory's kernels (integrals, orthants, ODEs): NumPy's error model."""
    return njit(error_model="numpy", **_options(inline, reassociate))
