"""The driver of a simulation: checks, the output file, seeds in parallel threads, signals.

Each seed index runs in its own thread (:class:`fastsgd.runner.SeedRunner`) with one BLAS
thread; the kernels release the GIL, so seeds run truly in parallel and every seed's
floating-point order is fixed whatever the thread count (docs/model.md §3.3).
"""

from __future__ import annotations

import errno
import shlex
import signal
import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from fastsgd import io
from fastsgd.config import MAX_SEEDS, ConfigError, SimConfig, parse_count
from fastsgd.resources import check_resources, usable_cores
from fastsgd.runner import GEN_BLOCK, SeedRunner

#: How often the driver looks at its seeds' futures (and so lets Python handle a signal).
POLL_SECONDS = 0.2


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives during :func:`simulate`."""


class WriteError(OSError):
    """Writing the run file failed mid-run (a full disk, a vanished folder); the message names
    the file. Every record flushed before the failure is intact, unfinished seeds are marked
    "interrupted" where the file can still be written."""


def simulate(cfg: SimConfig, out=None, overwrite: bool = False, threads: int | None = None,
             progress: bool = False, command_line: str | None = None) -> io.Run:
    """Run the simulation of ``cfg`` and write it to an HDF5 file (docs/model.md §8.2, §10.6).

    Parameters
    ----------
    cfg : the configuration.
    out : output path; None gives a parameter-derived name in ``data/`` (the next free suffix,
        claimed exclusively). Without ``overwrite`` the file is created exclusively and written
        in place; an existing file raises :class:`fastsgd.io.OutputExistsError` (a
        FileExistsError), also one made by another process a moment ago.
    overwrite : write under a temporary name beside ``out`` and rename it over ``out`` when the
        run ends (also after SIGINT/SIGTERM); until then an existing ``out`` is intact.
    threads : seeds run concurrently (each with one BLAS thread); default min(seeds, cores).
    progress : show a progress bar on stderr.

    Returns
    -------
    fastsgd.Run, the loaded file. On KeyboardInterrupt (SIGINT) or :class:`Terminated` (SIGTERM)
    the file is finished with status "interrupted" for unfinished seeds and the exception is
    re-raised. :class:`WriteError` if the file cannot be written mid-run or was replaced by
    another process before the run ended.
    """
    if not isinstance(cfg, SimConfig):
        raise TypeError(f"cfg must be a fastsgd.SimConfig, got {type(cfg).__name__}")
    threads = min(cfg.seeds, usable_cores() if threads is None
                  else parse_count(threads, "threads", 1, MAX_SEEDS))
    if cfg.latent_data is not None:   # the data file, checked against its hash (§11.1)
        from fastsgd.config import config_data_law
        config_data_law(cfg)
    output = io.resolve_output(cfg, out, overwrite)
    check_resources(cfg, threads, output.target.parent)
    writer = _create_writer(cfg, output,
                            shlex.join(sys.argv) if command_line is None else command_line)
    stop = threading.Event()
    bar = _progress_bar(cfg) if progress else None
    previous_term = _install_sigterm()
    try:
        _run_seeds(cfg, writer, stop, threads, bar)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        if bar is not None:
            bar.close()
        path = writer.close()
    return _load_own(path, writer.run_id)


def _create_writer(cfg: SimConfig, output: io.Output, command_line: str) -> io.RunWriter:
    steps = io.record_steps(cfg.steps, cfg.records)
    try:
        return io.RunWriter(output, cfg, steps, GEN_BLOCK, command_line)
    except io.OutputExistsError:
        raise
    except OSError as exc:  # nothing was run: bad output, and no half-made file left behind
        raise ConfigError("out", "a writable file path", str(output.target),
                          message=f"out cannot be written: {output.target} "
                                  f"({exc.strerror or exc})") from None


def _load_own(path, run_id: str) -> io.Run:
    """The finished file, checked to be this run's: another process may have replaced it
    with ``overwrite`` meanwhile (docs/model.md §10.6)."""
    run = io.load(path)
    if run.attrs.get("run_id") != run_id:
        raise WriteError(errno.EEXIST, f"{path} was replaced by another process during the run "
                         "(its --overwrite); this run's file is gone")
    return run


def _progress_bar(cfg: SimConfig):
    from tqdm import tqdm
    return tqdm(total=cfg.seeds * cfg.steps, unit="step", unit_scale=True, smoothing=0.1,
                file=sys.stderr, mininterval=0.5)


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _install_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _run_seeds(cfg: SimConfig, writer: io.RunWriter, stop: threading.Event, threads: int,
               bar) -> None:
    from threadpoolctl import threadpool_limits  # every BLAS call is NumPy's (none in numba)

    runners = [SeedRunner(cfg, i, writer, writer.steps, stop, bar) for i in range(cfg.seeds)]
    with threadpool_limits(limits=cfg.blas_threads, user_api="blas"), \
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fastsgd-seed") as pool:
        futures = [pool.submit(r.run) for r in runners]
        try:
            _wait_for_first_error(futures)
        except BaseException as exc:
            stop.set()
            _wait_through_signals(futures)
            _mark_unfinished(writer)
            if isinstance(exc, OSError):
                raise WriteError(exc.errno, f"writing {writer.path} failed ({exc}); the file "
                                 "holds every record flushed before") from exc
            raise


def _wait_for_first_error(futures) -> None:
    """Wait for every seed, re-raising the first exception one of them raised."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
        for fut in done:
            if fut.exception() is not None:
                raise fut.exception()


def _mark_unfinished(writer: io.RunWriter) -> None:
    try:
        for i, status in enumerate(writer.statuses()):
            if status in ("pending", "running"):
                writer.set_status(i, "interrupted")
    except OSError:
        pass  # the file cannot be written any more: its flushed records stay valid


def _wait_through_signals(futures) -> None:
    """Wait for the seeds to stop; a second Ctrl-C or SIGTERM does not cut the cleanup short."""
    while True:
        try:
            wait(futures)
            return
        except (KeyboardInterrupt, Terminated):
            continue
