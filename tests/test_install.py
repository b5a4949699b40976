"""fastsgd runs for a user who does not own its installation (analysis/jit.py, "Where the cache
lives"): numba's cache is never a reason to fail.

The unit tests walk :func:`analysis.jit.choose_cache`'s order (NUMBA_CACHE_DIR, in-tree, the
per-user cache folder, a private temporary folder, uncached) with each earlier place made
unusable: a path below a regular file cannot be created by any user, root included. The
end-to-end tests install fastsgd (not editable) into a root-owned, read-only folder and run the
command line as ``nobody`` (home /nonexistent); they are skipped unless run as root with
setpriv or runuser at hand.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from numba.core import config
from numba.core.caching import FunctionCache, NullCache

import analysis.jit as jit
from analysis.jit import Cache, choose_cache

ROOT = Path(__file__).resolve().parents[1]
KERNEL_MODULES = ("analysis.activations", "analysis.integrals", "analysis.orthant", "analysis.ode",
                  "fastsgd.core", "fastsgd.sampling", "fastsgd.sgd", "fastsgd.observables")


# --- Where the cache goes: the choice, place by place -------------------------------------------

@pytest.fixture
def places(tmp_path, monkeypatch):
    """No NUMBA_CACHE_DIR, no XDG_CACHE_HOME, HOME and the temporary directory in tmp_path;
    ``blocked`` is a regular file, so nothing below it can be created."""
    home, temporary, blocked = tmp_path / "home", tmp_path / "tmp", tmp_path / "blocked"
    home.mkdir()
    temporary.mkdir()
    blocked.write_text("")
    monkeypatch.setattr(config, "CACHE_DIR", "")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    return SimpleNamespace(home=home, temporary=temporary, blocked=blocked, tmp=tmp_path)


def packages(tmp_path, writable=True):
    """Two package folders, one with a ``__pycache__``; with ``writable=False`` that
    ``__pycache__`` is a regular file, so no cache can be written there (as in a read-only
    installation)."""
    a, b = tmp_path / "pkg_a", tmp_path / "pkg_b"
    a.mkdir()
    b.mkdir()
    if writable:
        (b / "__pycache__").mkdir()
    else:
        (b / "__pycache__").write_text("")
    return (str(a), str(b))


def private(folder):
    info = os.lstat(folder)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and stat.S_IMODE(
        info.st_mode) == 0o700


def test_the_package_folders_checked_for_an_in_tree_cache_hold_every_kernel():
    import importlib
    for name in KERNEL_MODULES:
        folder = os.path.dirname(os.path.abspath(importlib.import_module(name).__file__))
        assert folder in jit.PACKAGE_FOLDERS, name


def test_the_users_numba_cache_dir_comes_first(places):
    wanted = places.tmp / "mine" / "numba"
    config.CACHE_DIR = str(wanted)
    assert choose_cache(packages(places.tmp)) == Cache("NUMBA_CACHE_DIR", str(wanted))
    assert wanted.is_dir()


def test_an_unwritable_numba_cache_dir_is_passed_over_with_a_warning(places):
    config.CACHE_DIR = str(places.blocked / "numba")
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        assert choose_cache(packages(places.tmp)) == Cache("in-tree", None)


def test_writable_package_folders_cache_in_tree(places):
    missing = str(places.tmp / "not_installed")  # analysis without fastsgd beside it
    assert choose_cache(packages(places.tmp) + (missing,)) == Cache("in-tree", None)
    assert not (places.home / ".cache").exists()


def test_a_read_only_installation_caches_in_the_per_user_cache_folder(places, monkeypatch):
    read_only = packages(places.tmp, writable=False)
    expected = places.home / ".cache" / "fastsgd" / "numba"
    assert choose_cache(read_only) == Cache("user", str(expected))
    assert private(expected)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert choose_cache(read_only) == Cache("user", str(expected))
    monkeypatch.setenv("XDG_CACHE_HOME", str(places.tmp / "xdg"))
    assert choose_cache(read_only) == Cache("user", str(places.tmp / "xdg" / "fastsgd" / "numba"))


@pytest.mark.parametrize("home", ["unwritable", "unknown"])
def test_without_a_usable_home_the_cache_goes_to_a_private_temporary_folder(places, monkeypatch,
                                                                          home):
    if home == "unwritable":  # HOME=/nonexistent, as for nobody
        monkeypatch.setenv("HOME", str(places.blocked))
    else:  # no HOME and a uid without a passwd entry (a container's arbitrary uid): "~" stays
        monkeypatch.setattr(jit.os.path, "expanduser", lambda path: path)
    read_only = packages(places.tmp, writable=False)
    expected = places.temporary / f"fastsgd-numba-{os.getuid()}"
    assert choose_cache(read_only) == Cache("temporary", str(expected))
    assert private(expected)
    assert choose_cache(read_only) == Cache("temporary", str(expected))  # found again, reused


def test_nowhere_writable_means_uncached_not_a_crash(places, monkeypatch):
    monkeypatch.setenv("HOME", str(places.blocked))
    monkeypatch.setattr(tempfile, "tempdir", str(places.blocked))
    with pytest.warns(RuntimeWarning, match="compiled in every process"):
        assert choose_cache(packages(places.tmp, writable=False)) == Cache("none", None)


@pytest.mark.parametrize("how", ["group-writable", "symlink", "foreign"])
def test_a_temporary_folder_others_may_write_or_own_is_refused(places, monkeypatch, how):
    monkeypatch.setenv("HOME", str(places.blocked))
    folder = places.temporary / f"fastsgd-numba-{os.getuid()}"
    if how == "group-writable":
        folder.mkdir()
        folder.chmod(0o770)
    elif how == "symlink":  # another user's link to a folder it controls
        (places.tmp / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(places.tmp / "elsewhere")
    else:
        if os.geteuid() != 0:
            pytest.skip("giving a folder to another user needs root")
        folder.mkdir(mode=0o700)
        os.chown(folder, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.warns(RuntimeWarning, match="compiled in every process"):
        assert choose_cache(packages(places.tmp, writable=False)) == Cache("none", None)


def test_an_in_tree_cache_this_user_cannot_read_or_replace_is_not_used(places, monkeypatch):
    """numba raises on an index it cannot read (root's cache under umask 077) and on one it
    cannot replace (another user's file in a sticky folder): neither folder is used."""
    a, b = packages(places.tmp)
    index = Path(b) / "__pycache__" / "mod.f-3.py311.nbi"
    index.write_bytes(b"")
    assert choose_cache((a, b)) == Cache("in-tree", None)
    real_access = os.access
    monkeypatch.setattr(jit.os, "access", lambda path, mode, **kw: (
        False if str(path).endswith(".nbi") else real_access(path, mode, **kw)))
    assert choose_cache((a, b)).kind == "user"
    monkeypatch.setattr(jit.os, "access", real_access)
    (Path(b) / "__pycache__").chmod(0o1777)
    assert choose_cache((a, b)) == Cache("in-tree", None)  # the index is this user's
    if os.geteuid() == 0:
        os.chown(index, pwd.getpwnam("nobody").pw_uid, -1)
        assert choose_cache((a, b)).kind == "user"


@pytest.mark.parametrize("decorator", [jit.kernel, jit.theory_kernel])
def test_kernels_are_cached_where_the_choice_says_or_uncached(tmp_path, monkeypatch, decorator):
    folder = tmp_path / "numba"
    monkeypatch.setattr(config, "CACHE_DIR", "")
    monkeypatch.setattr(jit, "CACHE", Cache("user", str(folder)))

    def twice(x):
        return 2 * x

    cached = decorator()(twice)
    assert config.CACHE_DIR == ""  # set for the decoration only
    assert isinstance(cached._cache, FunctionCache)
    assert cached._cache.cache_path.startswith(str(folder))
    assert cached(2.0) == 4.0
    assert list(folder.rglob("*.nbi"))
    monkeypatch.setattr(jit, "CACHE", Cache("none", None))
    uncached = decorator()(twice)
    assert isinstance(uncached._cache, NullCache)
    assert uncached(3.0) == 6.0


# --- End to end: nobody runs a root-owned, read-only, non-editable installation -----------------

def as_nobody():
    """The command prefix that runs as ``nobody`` with no groups, or a reason to skip."""
    if os.geteuid() != 0:
        return None, "only root can run a command as another user"
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        return None, "no user 'nobody'"
    if shutil.which("setpriv"):
        return [shutil.which("setpriv"), f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                "--clear-groups"], user
    if shutil.which("runuser"):
        return [shutil.which("runuser"), "-u", "nobody", "--"], user
    return None, "neither setpriv nor runuser is installed"


def snapshot(folder):
    return {path: (info.st_size, info.st_mtime_ns, info.st_mode)
            for path, info in ((p, os.lstat(p)) for p in Path(folder).rglob("*"))} | {
        folder: os.lstat(folder).st_mode}


@pytest.fixture(scope="module")
def installation():
    """fastsgd pip-installed (a wheel build, not editable) into a root-owned folder made
    read-only; ``run(*args, env=)`` runs the interpreter as nobody with it and the venv's
    dependencies on PYTHONPATH, HOME=/nonexistent and a private TMPDIR."""
    prefix, user = as_nobody()
    if prefix is None:
        pytest.skip(user)
    base = Path(tempfile.mkdtemp(prefix="fastsgd-install-test-"))
    try:
        base.chmod(0o755)
        source, site, work = base / "source", base / "site", base / "work"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, source)
        for name in ("fastsgd", "analysis"):
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
        install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                   "--disable-pip-version-check", "--target", str(site), str(source)]
        built = subprocess.run(install, capture_output=True, text=True)
        if built.returncode != 0:  # no build backend from an index: the venv's own
            built = subprocess.run(install + ["--no-build-isolation"], capture_output=True,
                                   text=True)
        if built.returncode != 0:
            pytest.skip(f"pip could not build fastsgd here: {built.stderr[-500:]}")
        for path in [site, *site.rglob("*")]:
            os.lchown(path, 0, 0)
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.lstat().st_mode) & ~0o222)
        work.mkdir(mode=0o700)
        os.chown(work, user.pw_uid, user.pw_gid)
        dependencies = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
        env = {"HOME": user.pw_dir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYTHONPATH": os.pathsep.join([str(site), *dependencies]),
               "TMPDIR": str(work / "tmp"), "OMP_NUM_THREADS": "1"}
        os.makedirs(work / "tmp", mode=0o700)
        os.chown(work / "tmp", user.pw_uid, user.pw_gid)

        def run(python, *args, extra=None, timeout=600):
            return subprocess.run([*prefix, python, "-s", *args], env=env | (extra or {}),
                                  cwd=work, capture_output=True, text=True, timeout=timeout)

        # The venv's interpreter if nobody can run it, else the system's of the same version
        # (here the venv's base interpreter lies under /root, which nobody cannot enter).
        probe = ("import os, sys, importlib.util; os.stat(sys.executable); "
                 "os.stat(sys.base_prefix); import numba, numpy, scipy, h5py, click, matplotlib; "
                 "print(importlib.util.find_spec('fastsgd').origin)")  # found, not imported
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        reasons = []
        for python in dict.fromkeys([sys.executable, shutil.which(version) or version,
                                     f"/usr/bin/{version}"]):
            found = run(python, "-c", probe, timeout=120)
            if found.returncode == 0 and found.stdout.strip().startswith(str(site)):
                break
            reasons.append(f"{python}: {(found.stderr or found.stdout).strip()[-200:]}")
        else:
            pytest.skip("nobody cannot run an interpreter with the venv's packages: "
                        + "; ".join(reasons))
        before = snapshot(site)
        yield SimpleNamespace(site=site, work=work, python=python, before=before,
                              run=lambda *args, **kw: run(python, *args, **kw),
                              cache=work / "tmp" / f"fastsgd-numba-{user.pw_uid}")
        assert snapshot(site) == before, "something was written inside the installation"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def check(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_help_and_a_kernel_run_for_a_user_who_does_not_own_a_read_only_install(installation):
    inst = installation
    assert "simulate" in check(inst.run("-m", "fastsgd.cli", "--help"))
    assert "Usage: fastsgd" in check(inst.run(str(inst.site / "bin" / "fastsgd"), "--help"))
    assert "--out FILE" in check(inst.run("-m", "fastsgd.cli", "simulate", "--help"))
    kernel = ("import numpy as np, analysis.jit as j; "
              "from analysis.activations import ACTIVATION_CODES, activation_array; "
              "out = np.empty(2); activation_array(np.zeros(2), ACTIVATION_CODES['linear'], out); "
              "assert (out == 0).all(); print(j.CACHE.kind, j.CACHE.directory)")
    assert check(inst.run("-c", kernel)).split() == ["temporary", str(inst.cache)]
    assert list(inst.cache.rglob("activations.activation_array-*.nbi"))
    # The user's NUMBA_CACHE_DIR is respected; with no writable folder at all, uncached.
    mine = inst.work / "mine"
    assert check(inst.run("-c", kernel, extra={"NUMBA_CACHE_DIR": str(mine)})).split() == [
        "NUMBA_CACHE_DIR", str(mine)]
    assert list(mine.rglob("*.nbi"))
    nowhere = inst.run("-c", "import tempfile; tempfile.tempdir = '/nonexistent'; " + kernel)
    assert check(nowhere).split() == ["none", "None"]
    assert "compiled in every process" in nowhere.stderr
    assert snapshot(inst.site) == inst.before


@pytest.mark.slow
def test_simulate_and_ode_run_for_a_user_who_does_not_own_a_read_only_install(installation):
    """Every kernel the two commands use is compiled (cold cache) by nobody: about a minute."""
    inst = installation
    run, ode = inst.work / "r.h5", inst.work / "ode.h5"
    start = time.perf_counter()
    check(inst.run("-m", "fastsgd.cli", "simulate", "--N", "50", "--D", "25", "--steps", "200",
                   "--seeds", "1", "--quiet", "--out", str(run)))
    check(inst.run("-m", "fastsgd.cli", "ode", str(run), "--out", str(ode)))
    print(f"simulate + ode as nobody, cold cache: {time.perf_counter() - start:.1f} s")
    assert run.is_file() and ode.is_file()
    assert list(inst.cache.rglob("*.nbi"))
    assert snapshot(inst.site) == inst.before
