"""The ``fastsgd`` command line: a thin layer over :func:`fastsgd.simulate` (docs/model.md §8.1).

Every error is one stderr line (no traceback; FASTSGD_TRACEBACK=1 shows one for an unexpected
error). Errors in what the user typed exit 2 and write nothing. Exit codes: 0 success; 1 a failed
or empty result (the output could not be written mid-run or was replaced by another process,
every seed's ODE failed, no deviation in the window, failed sweep cells, an unexpected error);
2 bad input; 3 a seed diverged; 130 SIGINT; 143 SIGTERM.
"""

from __future__ import annotations

import math
import os
import shlex
import sys

import click

from analysis.activations import ACTIVATIONS, FOLDS
from analysis.ode import DEFAULT_DT, METHODS, MOMENTS_RK4_DT, RK4_MAX_DT
from fastsgd.config import (DEFAULTS, MAX_BLAS_THREADS, MAX_DIM, MAX_MOMENT_SAMPLES,
                            MAX_RECORDS, MAX_SEED, MAX_SEEDS, MAX_STEPS, MAX_TEST_SIZE,
                            MAX_UNITS, PRECISIONS, ConfigError, SimConfig, parse_count)
from fastsgd.io import OutputExistsError
from fastsgd.matched import LATENT_LAWS
from fastsgd.sampling import MEAN_GEOMETRIES, STANDARDIZATIONS, TEACHERS, WEIGHT_SCHEMES
from fastsgd.sgd import INPUT_MODELS
from fastsgd.theory import DEFAULT_METHOD, DEFAULT_T_MIN, THEORIES

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 3, 130, 143
DT_HELP = (f"[default: euler {DEFAULT_DT:g}; rk4: steps of at most {RK4_MAX_DT:g} chosen by "
           f"their error, or for the moments theory at most {MOMENTS_RK4_DT:g}, each capped by "
           "the state's stiffness; a given dt means fixed steps]")


class Count(click.ParamType):
    """An integer count written as 1000000, 1_000_000 or 1e6 (1.5 is refused)."""

    name = "count"

    def __init__(self, low: int = 1, high: int = MAX_STEPS) -> None:
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_count(value, param.name if param else "value", self.low, self.high)
        except ConfigError as exc:
            self.fail(f"must be {exc.allowed}, got {value!r}", param, ctx)


class Real(click.ParamType):
    """A finite float (nan and inf are refused here; ranges are checked by SimConfig)."""

    name = "number"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            x = float(value)
        except ValueError:
            self.fail(f"must be a finite number, got {value!r}", param, ctx)
        if x != x or x in (float("inf"), float("-inf")):
            self.fail(f"must be a finite number, got {value!r}", param, ctx)
        return x


def _choice(values) -> click.Choice:
    return click.Choice(list(values), case_sensitive=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastsgd")
def cli() -> None:
    """Online SGD of two-layer networks in the hidden manifold model (fastsgd)."""


def config_option(*decls: str, field: str, **kwargs):
    """A click option for a SimConfig field, with the field's default (one source)."""
    default = DEFAULTS[field]
    return click.option(*decls, field, default=default, show_default=default is not None,
                        **kwargs)


@cli.command()
@config_option("--N", "-N", field="N", type=Count(1, MAX_DIM), help="Input dimension N.")
@config_option("--D", "-D", field="D", type=Count(1, MAX_DIM), help="Latent dimension D.")
@config_option("-K", field="K", type=Count(1, MAX_UNITS), help="Student hidden units K.")
@config_option("-M", field="M", type=Count(1, MAX_UNITS), help="Teacher hidden units M.")
@config_option("--m", field="m", type=Count(1, MAX_UNITS),
               help="Mixture components of the latent (not M, the teacher's units).")
@config_option("--alpha", field="alpha", type=Real(),
               help="Spread of the mixture means, entries ~ U[-alpha, alpha) "
                    "(not the time/sample ratio of other papers).")
@config_option("--block-size", field="block_size", type=Count(1, MAX_DIM),
               help="Coordinates sharing one mixture label; must divide D.  [default: D]")
@config_option("--weights", field="weights", type=_choice(WEIGHT_SCHEMES),
               help="Mixture weights.")
@config_option("--standardize", field="standardize", type=_choice(STANDARDIZATIONS),
               help="Standardization of each latent.")
@config_option("--means", field="means", type=_choice(MEAN_GEOMETRIES),
               help="Mixture means: vector (i.i.d. entries) or scalar (a_i times the ones "
                    "vector).")
@config_option("--latent", field="latent", type=_choice(LATENT_LAWS),
               help="The mixture, or the Gaussian with its mean and covariance after "
                    "standardization.")
@config_option("--latent-data", field="latent_data", type=str, metavar="PATH",
               help="Latent vectors to sample from, one per row: FILE.npy or FILE.h5[:DATASET] "
                    "(implies --latent data, and D = its columns unless given).")
@config_option("--teacher", field="teacher", type=_choice(TEACHERS),
               help="Random teacher, or row 0 along the mixture's top between-label "
                    "direction.")
@config_option("--moment-samples", field="moment_samples", type=Count(1, MAX_MOMENT_SAMPLES),
               help="Monte Carlo samples of a matched law that has no exact form.")
@config_option("--center-inputs/--no-center-inputs", field="center_inputs",
               help="The student reads x - E x (E x exact where possible, else Monte Carlo "
                    "with --moment-samples).")
@config_option("--f", field="f", type=_choice(FOLDS),
               help="Folding function of the inputs x = f(Fc/sqrt(D)).")
@config_option("--g", field="g", type=_choice(ACTIVATIONS),
               help="Activation of student and teacher.")
@config_option("--lr", field="lr", type=Real(), help="Learning rate eta.")
@click.option("--first-layer-only", is_flag=True, help="Keep v = 1 fixed; train only w.")
@config_option("--steps", field="steps", type=Count(1, MAX_STEPS),
               help="SGD steps (one fresh sample each); t = steps/N.")
@config_option("--seeds", field="seeds", type=Count(1, MAX_SEEDS),
               help="Number of seed indices in the file.")
@config_option("--seed", field="seed", type=Count(0, MAX_SEED),
               help="Entropy of every random stream.")
@click.option("--threads", type=Count(1, MAX_SEEDS), default=None,
              help="Seeds run concurrently, one BLAS thread each.  [default: min(seeds, cores)]")
@config_option("--records", field="records", type=Count(2, MAX_RECORDS),
               help="Log-spaced record steps (before de-duplication).")
@config_option("--test-size", field="test_size", type=Count(1, MAX_TEST_SIZE),
               help="Test-set size for eg_mc and the empirical covariances.")
@config_option("--precision", field="precision", type=_choice(PRECISIONS),
               help="f64, or mixed: input GEMM in float32, SGD in float64.")
@config_option("--sigma", field="sigma", type=Real(),
               help="Output noise on the training labels.")
@config_option("--sample-seed", field="sample_seed", type=Count(0, MAX_SEED),
               help="Entropy of the data streams only (same F, teacher, student).  "
                    "[default: seed]")
@config_option("--input-model", field="input_model", type=_choice(INPUT_MODELS),
               help="hmm, or the equivalent Gaussian model of the inputs.")
@config_option("--first-seed-index", field="first_seed_index",
               type=Count(0, MAX_SEED - MAX_SEEDS),
               help="Index of the first seed (re-run one seed).")
@config_option("--blas-threads", field="blas_threads", type=Count(1, MAX_BLAS_THREADS),
               help="BLAS threads for a single seed (not bitwise reproducible).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output HDF5 file.  [default: a parameter-derived name in data/]")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def simulate(threads, out, overwrite, quiet, first_layer_only, **fields) -> None:
    """Simulate online SGD and write the trajectories to an HDF5 file."""
    import fastsgd

    argv = (click.get_current_context().obj or {}).get("argv", sys.argv[1:])
    try:
        _latent_data_defaults(fields)
        cfg = SimConfig(train_second_layer=not first_layer_only, **fields)
        run = fastsgd.simulate(cfg, out=out, overwrite=overwrite, threads=threads,
                               progress=not quiet and sys.stderr.isatty(),
                               command_line=shlex.join(["fastsgd", *argv]))
    except (ConfigError, OutputExistsError) as exc:
        raise click.UsageError(_flag_message(exc)) from None
    diverged = [f"{int(run.seed_index[i])} (step {int(run.diverged_step[i])})"
                for i, s in enumerate(run.status) if s == "diverged"]
    if not quiet:
        click.echo(f"wrote {run.path}")
    if diverged:
        click.echo(f"fastsgd simulate: seed index(es) diverged: {', '.join(diverged)}; "
                   f"lower --lr", err=True)
        raise SystemExit(EXIT_DIVERGED)


def _latent_data_defaults(fields: dict) -> None:
    """With --latent-data, --latent defaults to data and --D to the file's columns."""
    if fields["latent_data"] is None:
        return
    from click.core import ParameterSource
    from fastsgd.config import latent_data_errors
    from fastsgd.latent_data import open_data

    ctx = click.get_current_context()
    if ctx.get_parameter_source("latent") == ParameterSource.DEFAULT:
        fields["latent"] = "data"
    if ctx.get_parameter_source("D") == ParameterSource.DEFAULT:
        with latent_data_errors():
            fields["D"] = open_data(fields["latent_data"]).shape[1]


def _flag_message(exc: ConfigError | OutputExistsError) -> str:
    """The library's error with the command-line flag of its parameter in front."""
    if isinstance(exc, OutputExistsError):
        return f"--out: {exc.path} exists; pass --overwrite to replace it"
    ctx = click.get_current_context()
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    flags["train_second_layer"] = "--first-layer-only"
    return f"{flags.get(exc.parameter, exc.parameter)}: {exc}"


def _load_run(path: str, what: str = "RUN"):
    import fastsgd
    try:
        return fastsgd.load(path)
    except fastsgd.RunFileError as exc:
        raise click.UsageError(f"{what}: {exc}") from None


def _seed_positions(run, text: str) -> list[int]:
    if text.strip().lower() == "all":
        return list(range(len(run.status)))
    available = [int(s) for s in run.seed_index]
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        wanted = []
    if not wanted or any(s not in available for s in wanted):
        raise click.UsageError(f"--seed-index must be 'all' or a comma-separated list of the "
                               f"run's seed indices {available}, got {text!r}")
    return [available.index(s) for s in wanted]


def _positive_dt(dt: float) -> float:
    if not dt > 0:
        raise click.UsageError(f"--dt must be a finite number > 0, got {dt!r}")
    return dt


def _check_output_file(path: str, flag: str, figure: bool = False) -> None:
    """Refuse, before any computation, an output file whose folder is missing or not writable
    by this user, or a figure whose format matplotlib cannot write."""
    from pathlib import Path

    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise click.UsageError(f"{flag}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.UsageError(f"{flag}: the folder {str(folder)!r} is not writable by this user")
    if figure:
        from matplotlib.figure import Figure
        formats = sorted(Figure().canvas.get_supported_filetypes())
        suffix = Path(path).suffix.lstrip(".").lower()
        if suffix not in formats:
            raise click.UsageError(f"{flag}: the figure format must be one of "
                                   f"{', '.join(formats)} (the file's suffix), got {path!r}")


def _check_output_folder(path: str) -> None:
    """Refuse, before the cluster starts and without making anything, a sweep folder that this
    user could not make or write: its nearest existing ancestor must be a writable folder."""
    from pathlib import Path

    existing = Path(path).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise click.UsageError(f"--out: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.UsageError(f"--out: the folder {str(existing)!r} is not writable by this "
                               "user")


def _check_window(run, t_min: float, t_max: float | None) -> None:
    """Refuse a deviation window that holds none of the run's record times (t > 0)."""
    if t_max is not None and not t_max > t_min:
        raise click.UsageError(f"--t-max must be > --t-min ({t_min:g}), got {t_max:g}")
    t = run.t[run.t > 0]
    inside = (t >= t_min) & (t <= (math.inf if t_max is None else t_max))
    if not inside.any():
        raise click.UsageError(
            f"--t-min/--t-max: the window [{t_min:g}, {'∞' if t_max is None else f'{t_max:g}'}] "
            f"holds none of the run's record times (t = {t.min():g} … {t.max():g})")


@cli.command()
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.option("--seed-index", default="all", show_default=True,
              help="'all' or comma-separated seed indices of the run.")
@click.option("--theory", type=_choice(THEORIES), default="hmm", show_default=True,
              help="hmm: the N(0, I) hidden-manifold ODE; moments: the Gaussian-equivalent ODE "
                   "on the run's own input moments.")
@click.option("--dt", type=Real(), default=None, help=DT_HELP)
@click.option("--method", type=_choice(METHODS), default=DEFAULT_METHOD, show_default=True,
              help="euler (the published integrators' semantics) or rk4.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output ODE.h5.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def ode(run_path, seed_index, theory, dt, method, out, overwrite) -> None:
    """Integrate every seed's ODE (HMM or moments theory) on the run's time grid."""
    from pathlib import Path

    from fastsgd.theory import TheoryUnavailable, integrate_run, moments_odes, write_ode_file

    run = _load_run(run_path)
    positions = _seed_positions(run, seed_index)
    if dt is not None:
        _positive_dt(dt)
    out_path = Path(out)
    if out_path.exists() and not overwrite:
        raise click.UsageError(f"--out: {out_path} exists; pass --overwrite to replace it")
    _check_output_file(out, "--out")
    moments = None
    try:
        if theory == "moments":
            moments = moments_odes(run, positions, dt=dt, method=method)
            trajectories = moments.trajectories
        else:
            trajectories = integrate_run(run, positions, dt=dt, method=method)
    except TheoryUnavailable as exc:
        raise click.UsageError(f"{exc} (fastsgd compare --reference)") from None
    step, control = trajectories[0].dt, trajectories[0].step_control
    try:
        write_ode_file(out_path, run, positions, trajectories, dt=step, method=method,
                       overwrite=overwrite, theory=theory, moments=moments)
    except OutputExistsError:
        raise click.UsageError(f"--out: {out_path} exists (made while the ODE ran); pass "
                               "--overwrite to replace it") from None
    except OSError as exc:
        click.echo(f"fastsgd ode: error: --out {out_path} cannot be written "
                   f"({_one_line(exc.strerror or exc)})", err=True)
        raise SystemExit(EXIT_FAILED) from None
    failed = [int(run.seed_index[i]) for i, tr in zip(positions, trajectories)
              if tr.status != "ok"]
    click.echo(f"wrote {out_path} ({len(positions)} seed(s), {theory} theory, {method}, dt = "
               f"{'≤ ' if control else ''}{step:g})")
    if failed:
        click.echo(f"fastsgd ode: the ODE failed for seed index(es) {failed} "
                   f"({len(failed)} of {len(positions)}; their status and t_failed are in "
                   f"{out_path})",
                   err=True)
        if len(failed) == len(positions):
            raise SystemExit(EXIT_FAILED)
    if moments is not None and moments.moments_method != "exact":
        click.echo(f"moments: Monte Carlo ({moments.samples} samples); estimated error of eg "
                   f"per seed: {', '.join(f'{e:.2g}' for e in moments.error)}")


@cli.command()
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.argument("ode_path", metavar="[ODE.h5]", required=False, type=click.Path(dir_okay=False))
@click.option("--reference", type=click.Path(dir_okay=False),
              help="Compare against this run (e.g. the Gaussian-latent run, sample_seed = "
                   "seed + 1) instead of the ODE.")
@click.option("--floor", type=click.Path(dir_okay=False),
              help="The Gaussian-latent floor run: adds its deviation and the verdict.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of the trajectories.")
@click.option("--theory", type=_choice(THEORIES), default=None,
              help="The ODE's theory (hmm or moments).  [default: the ODE file's, else hmm]")
@click.option("--dt", type=Real(), default=None,
              help="ODE time step when the ODE is integrated on the fly.  " + DT_HELP)
@click.option("--method", type=_choice(METHODS), default=DEFAULT_METHOD, show_default=True)
@click.option("--t-min", type=Real(), default=DEFAULT_T_MIN, show_default=True,
              help="Start of the deviation window.")
@click.option("--t-max", type=Real(), default=None,
              help="End of the deviation window.  [default: last time covered by both]")
def compare(run_path, ode_path, reference, floor, plot, theory, dt, method, t_min,
            t_max) -> None:
    """Print the deviation of a run from its theory (mean ± s.e.m. over seeds)."""
    import fastsgd
    from fastsgd.theory import TheoryUnavailable, compare_run, format_table, theory_for

    if ode_path and reference:
        raise click.UsageError("give ODE.h5 or --reference, not both")
    if reference and theory:
        raise click.UsageError("give --theory or --reference, not both")
    if dt is not None:
        _positive_dt(dt)
    if plot:
        _check_output_file(plot, "--plot", figure=True)
    run = _load_run(run_path)
    _check_window(run, t_min, t_max)
    reference_run = _load_run(reference, "--reference") if reference else None
    floor_run = _load_run(floor, "--floor") if floor else None
    try:
        theory = theory_for(run, ode_file=ode_path, reference=reference_run, dt=dt,
                            method=method, theory=theory)
        result = compare_run(run, theory, floor=floor_run, t_min=t_min, t_max=t_max)
    except TheoryUnavailable as exc:
        raise click.UsageError(f"{exc} (--reference)") from None
    except ConfigError as exc:
        raise click.UsageError(_flag_message(exc)) from None
    except (ValueError, fastsgd.RunFileError) as exc:
        raise click.UsageError(str(exc)) from None
    kind = "ODE" if theory.kind == "ode" else "reference run"
    if result.table["eg_mc"].n_valid == 0:
        click.echo(f"fastsgd compare: no seed of {run.path} has a deviation of eg_mc from "
                   f"{theory.source} in the window (every seed's data or theory stop before "
                   f"it: statuses {', '.join(run.status)})", err=True)
        raise SystemExit(EXIT_FAILED)
    click.echo(format_table(result.table, f"{run.path}: deviation from {theory.source} ({kind})"))
    error = theory.moments_error
    if error is not None and any(e == e for e in error):   # NaN: exact moments
        click.echo(f"Monte Carlo moments: estimated error of the theory's eg per seed "
                   f"{', '.join(f'{e:.2g}' for e in error)}")
    if floor_run is not None:
        click.echo("")
        click.echo(format_table(result.floor_table, f"floor {floor_run.path}"))
        verdict = result.verdict
        worst = max((e for e in (error if error is not None else []) if e == e), default=None)
        shown = verdict.verdict
        if worst is not None and not worst < verdict.floor.mean:   # docs/model.md §10.5
            shown = (f"undetermined (the theory's Monte Carlo error {worst:.3g} is not below "
                     "the floor: raise --moment-samples)")
        click.echo(f"\nverdict (eg_mc): {shown}; cell {verdict.cell}, floor "
                   f"{verdict.floor}; paired difference {verdict.paired_mean:.4g} ± "
                   f"{verdict.paired_sem:.2g} (z = {verdict.paired_z:.2f})")
    if plot:
        from fastsgd.plots import plot_comparison
        plot_comparison(run, theory, plot)
        click.echo(f"wrote {plot}")


@cli.command()
@click.argument("grid_path", metavar="GRID.toml", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: runs/ and summary.csv.")
@click.option("--scheduler", default=None,
              help="Address of an existing Dask scheduler (tcp://host:port).  "
                   "[default: a local cluster]")
@click.option("--workers", type=Count(1, 4096), default=None,
              help="Worker processes of the local cluster, one thread each.  [default: cores]")
def sweep(grid_path, out, scheduler, workers) -> None:
    """Run every cell of a grid on Dask; write one run per cell and DIR/summary.csv."""
    from fastsgd.sweep import GridError, sweep as run_sweep

    _check_output_folder(out)
    try:
        rows = run_sweep(grid_path, out, scheduler=scheduler, workers=workers,
                         echo=lambda line: click.echo(line, err=True))
    except GridError as exc:
        raise click.UsageError(str(exc)) from None
    failed = sum(r.get("verdict") == "failed" for r in rows)
    if failed:
        click.echo(f"fastsgd sweep: {failed} cell(s) failed (see the error column of "
                   f"summary.csv); rerun the same command to retry them", err=True)
        raise SystemExit(EXIT_FAILED)


@cli.command()
@click.argument("source", metavar="DIR|RUN.h5", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
def plot(source, out) -> None:
    """Heat maps of a sweep's deviation over (m, α), or a run's trajectories with its ODE."""
    from pathlib import Path

    src, out_path = Path(source), Path(out)
    _check_output_file(out, "--out", figure=True)
    if src.is_dir():
        summary = src / "summary.csv"
        if not summary.is_file():
            raise click.UsageError(f"DIR: {src} has no summary.csv (not a sweep folder)")
        from fastsgd.plots import plot_heatmaps
        from fastsgd.summary import SummaryError, read_summary
        try:
            rows = read_summary(summary)
        except SummaryError as exc:
            raise click.UsageError(f"DIR: {exc}") from None
        if not {"m", "alpha"} <= set(rows[0]):
            raise click.UsageError(f"DIR: {summary} has no m and alpha columns to map")
        if all(row["verdict"] == "failed" for row in rows):
            click.echo(f"fastsgd plot: every cell of {summary} failed (see its error column); "
                       "nothing to draw", err=True)
            raise SystemExit(EXIT_FAILED)
        plot_heatmaps(rows, out_path)
    else:
        from fastsgd.plots import plot_comparison
        from fastsgd.theory import TheoryUnavailable, theory_for
        run = _load_run(source)
        try:
            theory = theory_for(run)
        except TheoryUnavailable as exc:
            raise click.UsageError(f"{exc}; use fastsgd compare --reference ... --plot") from None
        plot_comparison(run, theory, out_path)
    click.echo(f"wrote {out_path}")


@cli.command()
@click.argument("name", metavar="NAME", type=click.Choice(["patches", "digits"]))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Output file: .npy, or .h5 (dataset 'latents').")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--patch-size", type=int, default=None,
              help="patches: side of a patch in pixels, 2 to 64.  [default: 16]")
@click.option("--patch-stride", type=int, default=None,
              help="patches: pixels between patch corners.  [default: half the side]")
def latents(name, out, overwrite, patch_size, patch_stride) -> None:
    """Make a latent file from a data set that ships with a package (NAME: patches or digits;
    docs/model.md §11.5), for --latent-data; print its shape and moments."""
    from fastsgd.datasets import PATCH_SIZE, MissingPackage, make_latents
    from fastsgd.latent_data import content_hash, save_latents

    _check_output_file(out, "--out")
    if os.path.exists(out) and not overwrite:
        raise click.UsageError(f"--out: {out} exists; pass --overwrite to replace it")
    if name != "patches" and (patch_size, patch_stride) != (None, None):
        raise click.UsageError(f"--patch-size/--patch-stride: for patches only, not {name}")
    try:
        array = make_latents(name, PATCH_SIZE if patch_size is None else patch_size,
                             patch_stride)
    except MissingPackage as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(f"--patch-size/--patch-stride: {exc}") from None
    path = save_latents(array, out, overwrite)
    click.echo(f"wrote {path}: {name}, shape {array.shape}, sha256 {content_hash(array)}")
    for line in _latent_moments(array):
        click.echo(line)


def _latent_moments(array) -> list[str]:
    """Lines describing a latent file's moments raw and whitened (§11.2)."""
    import numpy as np

    from fastsgd.datasets import projection_kurtosis
    from fastsgd.latent_data import LatentDataError, standardize_data, summary

    lines = []
    for kind in ("none", "population", "whiten"):
        try:
            law = standardize_data(array, kind)
        except LatentDataError as exc:
            lines.append(f"{kind}: {exc}")
            continue
        info, kurt = summary(law), projection_kurtosis(law.rows)
        q05, q50, q95 = np.quantile(kurt, [0.05, 0.5, 0.95])
        lines.append(
            f"{kind}: mean {info['mean_range'][0]:.3g}…{info['mean_range'][1]:.3g}, variance "
            f"{info['variance_range'][0]:.3g}…{info['variance_range'][1]:.3g}, covariance "
            f"eigenvalues {info['eigenvalue_range'][0]:.3g}…{info['eigenvalue_range'][1]:.3g}; "
            f"excess kurtosis: coordinates median {info['excess_kurtosis_median']:.3g} (max |·| "
            f"{info['excess_kurtosis_max_abs']:.3g}), random projections median {q50:.3g} "
            f"[5–95 %: {q05:.3g}, {q95:.3g}]")
    return lines


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastsgd`` script; returns (and exits with) the exit code."""
    import fastsgd

    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = args[0] if args and not args[0].startswith("-") else ""
    prefix = f"fastsgd {command}".strip()
    try:
        cli.main(args=args, prog_name="fastsgd", standalone_mode=False, obj={"argv": args})
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        hint = f" (see 'fastsgd {command} --help')" if command else " (see 'fastsgd --help')"
        click.echo(f"{prefix}: error: {_one_line(exc.format_message())}{hint}", err=True)
        code = EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"{prefix}: error: {_one_line(exc.format_message())}", err=True)
        code = EXIT_USAGE
    except (click.Abort, KeyboardInterrupt):
        click.echo(f"{prefix}: interrupted (SIGINT); the file holds every record so far",
                   err=True)
        code = EXIT_SIGINT
    except (ConfigError, FileExistsError, fastsgd.RunFileError) as exc:
        click.echo(f"{prefix}: error: {_one_line(exc)}", err=True)
        code = EXIT_USAGE
    except fastsgd.WriteError as exc:
        click.echo(f"{prefix}: error: {_one_line(exc.strerror or exc)}", err=True)
        code = EXIT_FAILED
    except fastsgd.Terminated:
        click.echo(f"{prefix}: terminated (SIGTERM); the file holds every record so far",
                   err=True)
        code = EXIT_SIGTERM
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_OK
    except Exception as exc:   # noqa: BLE001 - every error is one line (README, exit codes)
        if os.environ.get("FASTSGD_TRACEBACK"):
            raise
        click.echo(f"{prefix}: error: {type(exc).__name__}: {_one_line(exc)} (unexpected; "
                   "FASTSGD_TRACEBACK=1 shows where)", err=True)
        code = EXIT_FAILED
    else:
        code = EXIT_OK
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
