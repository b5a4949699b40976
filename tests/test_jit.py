"""The compile options of every numba kernel (analysis/jit.py; docs/model.md §3.3 Threads, §5).

Every kernel is cached on disk (where this user can write a cache; tests/test_install.py) and
releases the GIL (seeds run in parallel threads); the only fast-math flags are reassociation and
contraction, so NaN and inf reach every check; the theory's kernels (integrals, orthants, ODEs)
use NumPy's error model (x/0 = inf or NaN, so a degenerate state reaches the ODE's failure checks,
§5, §5.5), the simulator's Python's (x/0 raises).
"""

from __future__ import annotations

import importlib

import pytest
from numba.core.caching import FunctionCache
from numba.core.registry import CPUDispatcher

from analysis.jit import CACHE, REASSOCIATE, kernel, theory_kernel

THEORY_MODULES = ("analysis.integrals", "analysis.orthant", "analysis.ode")
SIMULATOR_MODULES = ("analysis.activations", "fastsgd.core", "fastsgd.sampling", "fastsgd.sgd",
                     "fastsgd.observables")


@kernel()
def divide(a, b):
    return a / b


@theory_kernel()
def theory_divide(a, b):
    return a / b


def dispatchers(module_name):
    module = importlib.import_module(module_name)
    found = {name: obj for name, obj in vars(module).items()
             if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module_name}
    assert found, module_name
    return found


@pytest.mark.parametrize("module_name", THEORY_MODULES + SIMULATOR_MODULES)
def test_every_kernel_is_cached_releases_the_gil_and_has_its_error_model(module_name):
    theory = module_name in THEORY_MODULES
    for name, dispatcher in dispatchers(module_name).items():
        options = dispatcher.targetoptions
        assert options.get("nogil") is True, name
        assert isinstance(dispatcher._cache, FunctionCache) == (CACHE.kind != "none"), name
        if CACHE.directory is not None:  # not in-tree: every kernel in the chosen folder
            assert dispatcher._cache.cache_path.startswith(CACHE.directory), name
        assert (options.get("error_model") == "numpy") == theory, name
        assert set(options.get("fastmath", set())) <= REASSOCIATE, name


def test_the_error_models_differ_on_division_by_zero():
    assert REASSOCIATE == frozenset({"reassoc", "contract"})
    assert theory_divide(1.0, 0.0) == float("inf")
    with pytest.raises(ZeroDivisionError):
        divide(1.0, 0.0)
