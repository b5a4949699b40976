"""The compile options of every numba kernel in fastsgd and analysis, in one place.

Every kernel is cached on disk when a usable cache exists (the compile cost is paid once) and
releases the GIL (``nogil=True``: seeds run in parallel threads). Two families differ in one
option:

- :func:`kernel` (the simulator's kernels and the activations both sides share): Python's error
  model, so a division by zero is a bug that raises;
- :func:`theory_kernel`: NumPy's error model (x/0 = ±inf or NaN), so that a degenerate state is
  detected by the ODE's finiteness checks (docs/model.md §5.5) instead of raising inside
  compiled code.

``reassociate=True`` lets LLVM reorder sums and fuse multiply-adds (vectorised loops) in an
order fixed by the compiled code, so results still do not depend on the thread count; no flag
that assumes finite values is ever set, so NaN and inf reach every divergence and failure check.

Where the cache lives
---------------------
The user running fastsgd need not own its installation (a site-wide venv installed by root, a
container image, a shared cluster). numba's ``cache=True`` picks, at decoration (import) time,
``NUMBA_CACHE_DIR``, else the source's ``__pycache__`` if writable, else ``~/.cache/numba``,
and raises ("no locator available") when none is writable: ``fastsgd --help`` failed for such a
user. :data:`CACHE` is therefore chosen once, at import (:func:`choose_cache`), and a kernel is
compiled uncached rather than fail. The in-tree cache is used only where this user could also
rewrite it: numba crashes on an index file it cannot read (a cache built by root under umask
077) or cannot replace (a sticky ``__pycache__``); a read-only ``__pycache__`` (the usual root
install) is never read by numba, so root's in-tree cache serves root alone.
The chosen folder is handed to numba as ``numba.config.CACHE_DIR`` only while a kernel is
decorated (numba reads it then, once per function; a lasting assignment would be undone by
``config.reload_config()`` whenever a ``NUMBA_*`` variable changes, and would move other
libraries' caches too).
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
import warnings
from typing import NamedTuple

from numba import njit
from numba.core import config

__all__ = ["CACHE", "REASSOCIATE", "THEORY_OPTIONS", "Cache", "choose_cache", "kernel",
           "theory_kernel"]

#: The only fast-math flags used anywhere: reassociation and contraction (FMA).
REASSOCIATE = frozenset({"reassoc", "contract"})

#: The folders whose ``__pycache__`` holds an in-tree cache: every package with kernels.
PACKAGE_FOLDERS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     name) for name in ("analysis", "fastsgd"))


class Cache(NamedTuple):
    """Where the kernels are cached.

    Attributes
    ----------
    kind : str
        ``"NUMBA_CACHE_DIR"`` (the user's), ``"in-tree"`` (the packages' ``__pycache__``),
        ``"user"`` (the per-user cache folder), ``"temporary"`` (a per-user folder in the
        temporary directory) or ``"none"`` (uncached: compiled in every process).
    directory : str or None
        The folder given to numba as ``config.CACHE_DIR``; None for in-tree and none.
    """

    kind: str
    directory: str | None


def _writable(folder: str, mode: int = 0o700) -> bool:
    """Create ``folder`` if needed and write a file there, as numba does before using it."""
    try:
        os.makedirs(folder, mode=mode, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _in_tree_usable(package: str) -> bool:
    """Whether this user can read and rewrite every numba file in ``package/__pycache__``."""
    if not os.path.isdir(package):
        return True  # not installed here (analysis alone): nothing of it to cache
    pycache = os.path.join(package, "__pycache__")
    if not _writable(pycache, mode=0o777):  # created as numba and Python would create it
        return False
    try:
        sticky = os.stat(pycache).st_mode & stat.S_ISVTX  # others' files cannot be replaced
        with os.scandir(pycache) as entries:
            files = [e for e in entries if e.name.endswith((".nbi", ".nbc"))]
        return all(os.access(e.path, os.R_OK) for e in files) and not (
            sticky and any(e.stat().st_uid != os.getuid() for e in files))
    except OSError:
        return False


def _own_temporary_folder() -> str | None:
    """``fastsgd-numba-<uid>`` in the temporary directory, if it is this user's alone."""
    try:
        folder = os.path.join(tempfile.gettempdir(), f"fastsgd-numba-{os.getuid()}")
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(folder)
    except (OSError, AttributeError):  # no usable temporary directory, or no uids (Windows)
        return None
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    return folder if private and not info.st_mode & 0o022 and _writable(folder) else None


def choose_cache(packages: tuple[str, ...] = PACKAGE_FOLDERS) -> Cache:
    """Choose where this process caches its kernels; never raises.

    In order: ``numba.config.CACHE_DIR`` (``NUMBA_CACHE_DIR``) if the user set it and it is
    writable; the in-tree ``__pycache__`` if this user can rewrite it in every package folder;
    ``$XDG_CACHE_HOME/fastsgd/numba`` (default ``~/.cache``); ``<tmp>/fastsgd-numba-<uid>``
    (created 0700, refused if another user owns it or may write to it); else no cache.

    Parameters
    ----------
    packages : tuple of str
        The package folders whose kernels an in-tree cache would hold.

    Returns
    -------
    Cache
    """
    if config.CACHE_DIR:
        if _writable(config.CACHE_DIR, mode=0o777):  # created as numba would create it
            return Cache("NUMBA_CACHE_DIR", config.CACHE_DIR)
        warnings.warn(f"NUMBA_CACHE_DIR={config.CACHE_DIR!r} is not writable; fastsgd caches "
                      "its kernels elsewhere", RuntimeWarning, stacklevel=2)
    if all(_in_tree_usable(package) for package in packages):
        return Cache("in-tree", None)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")  # "~" if no HOME and no passwd entry
    user = os.path.join(base, "fastsgd", "numba")
    if os.path.isabs(user) and _writable(user):
        return Cache("user", user)
    temporary = _own_temporary_folder()
    if temporary is not None:
        return Cache("temporary", temporary)
    warnings.warn("no writable folder for numba's cache (set NUMBA_CACHE_DIR): fastsgd's "
                  "kernels are compiled in every process", RuntimeWarning, stacklevel=2)
    return Cache("none", None)


#: This process's choice, made once before the first kernel is decorated.
CACHE = choose_cache()
_DECORATING = threading.Lock()


def _njit(**options):
    """``numba.njit(**options)``, cached where :data:`CACHE` says, uncached if nowhere."""
    if CACHE.kind == "none":
        return njit(cache=False, **options)
    decorate = njit(cache=True, **options)

    def cached(function):
        with _DECORATING:
            saved, config.CACHE_DIR = config.CACHE_DIR, CACHE.directory or ""
            try:
                return decorate(function)
            finally:
                config.CACHE_DIR = saved

    return cached


def _options(inline: bool, reassociate: bool) -> dict:
    options: dict = {"nogil": True}
    if inline:
        options["inline"] = "always"
    if reassociate:
        options["fastmath"] = set(REASSOCIATE)  # numba wants a (mutable) set
    return options


def kernel(*, inline: bool = False, reassociate: bool = False):
    """``@njit`` for the simulator's kernels (sampling, SGD, observables) and activations."""
    return _njit(**_options(inline, reassociate))


def theory_kernel(*, inline: bool = False, reassociate: bool = False):
    """``@njit`` for the theory's kernels (integrals, orthants, ODEs): NumPy's error model."""
    return _njit(error_model="numpy", **_options(inline, reassociate))


#: A theory kernel's options (neither inlined nor reassociated) as ``jit_options`` of
#: ``numba.extending.overload``: an overload's implementation compiles like a theory kernel.
THEORY_OPTIONS = {"error_model": "numpy", **_options(False, False)}
