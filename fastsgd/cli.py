"""The ``fastsgd`` command line: a thin layer over :func:`fastsgd.simulate` (MODEL.md §8.1).

Errors in what the user typed end the process with one stderr line and exit code 2; nothing is
written then. Exit codes: 0 all seeds ok, 1 the output could not be written mid-run (a full
disk), 2 bad input, 3 a seed diverged, 130 SIGINT, 143 SIGTERM.
"""

from __future__ import annotations

import shlex
import sys

import click

from analysis.activations import ACTIVATIONS, FOLDS
from fastsgd.config import (INPUT_MODELS, MAX_BLAS_THREADS, MAX_DIM, MAX_RECORDS, MAX_SEED,
                            MAX_SEEDS, MAX_STEPS, MAX_TEST_SIZE, MAX_UNITS, PRECISIONS,
                            STANDARDIZATIONS, WEIGHT_SCHEMES, ConfigError, SimConfig,
                            parse_count)

EXIT_OK, EXIT_WRITE, EXIT_USAGE, EXIT_DIVERGED, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 3, 130, 143


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
        except ConfigError as exc:  # "<name> must be …, got …": keep what follows the name
            self.fail("must be " + str(exc).split(" must be ", 1)[-1], param, ctx)


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


@cli.command()
@click.option("--N", "-N", "N", type=Count(1, MAX_DIM), default=1000, show_default=True,
              help="Input dimension N.")
@click.option("--D", "-D", "D", type=Count(1, MAX_DIM), default=500, show_default=True,
              help="Latent dimension D.")
@click.option("-K", "K", type=Count(1, MAX_UNITS), default=2, show_default=True,
              help="Student hidden units K.")
@click.option("-M", "M", type=Count(1, MAX_UNITS), default=2, show_default=True,
              help="Teacher hidden units M.")
@click.option("--m", "m", type=Count(1, MAX_UNITS), default=1, show_default=True,
              help="Mixture components of the latent (not M, the teacher's units).")
@click.option("--alpha", "alpha", type=Real(), default=0.0, show_default=True,
              help="Spread of the mixture means, entries ~ U[-alpha, alpha) "
                   "(not the time/sample ratio of other papers).")
@click.option("--block-size", "block_size", type=Count(1, MAX_DIM), default=None,
              help="Coordinates sharing one mixture label; must divide D.  [default: D]")
@click.option("--weights", type=_choice(WEIGHT_SCHEMES), default="uniform", show_default=True,
              help="Mixture weights.")
@click.option("--standardize", type=_choice(STANDARDIZATIONS), default="none",
              show_default=True, help="Standardization of each latent.")
@click.option("--f", "f", type=_choice(FOLDS), default="sign", show_default=True,
              help="Folding function of the inputs x = f(Fc/sqrt(D)).")
@click.option("--g", "g", type=_choice(ACTIVATIONS), default="erf", show_default=True,
              help="Activation of student and teacher.")
@click.option("--lr", type=Real(), default=0.2, show_default=True, help="Learning rate eta.")
@click.option("--first-layer-only", is_flag=True, help="Keep v = 1 fixed; train only w.")
@click.option("--steps", type=Count(1, MAX_STEPS), default=1_000_000, show_default=True,
              help="SGD steps (one fresh sample each); t = steps/N.")
@click.option("--seeds", type=Count(1, MAX_SEEDS), default=1, show_default=True,
              help="Number of seed indices in the file.")
@click.option("--seed", type=Count(0, MAX_SEED), default=0, show_default=True,
              help="Entropy of every random stream.")
@click.option("--threads", type=Count(1, MAX_SEEDS), default=None,
              help="Seeds run concurrently, one BLAS thread each.  [default: min(seeds, cores)]")
@click.option("--records", type=Count(2, MAX_RECORDS), default=200, show_default=True,
              help="Log-spaced record steps (before de-duplication).")
@click.option("--test-size", "test_size", type=Count(1, MAX_TEST_SIZE), default=10_000,
              show_default=True, help="Test-set size for eg_mc and the empirical covariances.")
@click.option("--precision", type=_choice(PRECISIONS), default="f64", show_default=True,
              help="f64, or mixed: input GEMM in float32, SGD in float64.")
@click.option("--sigma", type=Real(), default=0.0, show_default=True,
              help="Output noise on the training labels.")
@click.option("--sample-seed", "sample_seed", type=Count(0, MAX_SEED), default=None,
              help="Entropy of the data streams only (same F, teacher, student).  [default: seed]")
@click.option("--input-model", "input_model", type=_choice(INPUT_MODELS), default="hmm",
              show_default=True, help="hmm, or the equivalent Gaussian model of the inputs.")
@click.option("--first-seed-index", "first_seed_index", type=Count(0, MAX_SEED - MAX_SEEDS),
              default=0, show_default=True, help="Index of the first seed (re-run one seed).")
@click.option("--blas-threads", "blas_threads", type=Count(1, MAX_BLAS_THREADS), default=1,
              show_default=True, help="BLAS threads for a single seed (not bitwise reproducible).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output HDF5 file.  [default: a parameter-derived name in data/]")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def simulate(threads, out, overwrite, quiet, first_layer_only, **fields) -> None:
    """Simulate online SGD and write the trajectories to an HDF5 file."""
    import fastsgd

    argv = (click.get_current_context().obj or {}).get("argv", sys.argv[1:])
    try:
        cfg = SimConfig(train_second_layer=not first_layer_only, **fields)
        run = fastsgd.simulate(cfg, out=out, overwrite=overwrite, threads=threads,
                               progress=not quiet and sys.stderr.isatty(),
                               command_line=shlex.join(["fastsgd", *argv]))
    except (ConfigError, FileExistsError) as exc:
        raise click.UsageError(str(exc)) from None
    diverged = [f"{int(run.seed_index[i])} (step {int(run.diverged_step[i])})"
                for i, s in enumerate(run.status) if s == "diverged"]
    if not quiet:
        click.echo(f"wrote {run.path}")
    if diverged:
        click.echo(f"fastsgd simulate: seed index(es) diverged: {', '.join(diverged)}; "
                   f"lower --lr", err=True)
        raise SystemExit(EXIT_DIVERGED)


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


@cli.command()
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.option("--seed-index", default="all", show_default=True,
              help="'all' or comma-separated seed indices of the run.")
@click.option("--dt", type=Real(), default=0.01, show_default=True, help="ODE time step.")
@click.option("--method", type=_choice(["euler", "rk4"]), default="euler", show_default=True,
              help="euler (the published integrators' semantics) or rk4.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output ODE.h5.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def ode(run_path, seed_index, dt, method, out, overwrite) -> None:
    """Integrate every seed's HMM ODE from its exact initial state on the run's time grid."""
    from pathlib import Path

    from analysis.compare import TheoryUnavailable, integrate_run, write_ode_file

    run = _load_run(run_path)
    positions = _seed_positions(run, seed_index)
    _positive_dt(dt)
    out_path = Path(out)
    if out_path.exists() and not overwrite:
        raise click.UsageError(f"out: {out_path} exists; pass --overwrite to replace it")
    if not out_path.parent.is_dir():
        raise click.UsageError(f"out: the folder {str(out_path.parent)!r} does not exist")
    try:
        trajectories = integrate_run(run, positions, dt=dt, method=method)
    except (TheoryUnavailable, NotImplementedError) as exc:
        raise click.UsageError(str(exc)) from None
    write_ode_file(out_path, run, positions, trajectories, dt=dt, method=method,
                   overwrite=overwrite)
    failed = [int(run.seed_index[i]) for i, tr in zip(positions, trajectories)
              if tr.status != "ok"]
    click.echo(f"wrote {out_path} ({len(positions)} seed(s), {method}, dt = {dt:g})"
               + (f"; ODE failed for seed index(es) {failed}" if failed else ""))


@cli.command()
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.argument("ode_path", metavar="[ODE.h5]", required=False, type=click.Path(dir_okay=False))
@click.option("--reference", type=click.Path(dir_okay=False),
              help="Compare against this run (e.g. the Gaussian-latent run, sample_seed = "
                   "seed + 1) instead of the ODE.")
@click.option("--floor", type=click.Path(dir_okay=False),
              help="The Gaussian-latent floor run: adds its deviation and the verdict.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of the trajectories.")
@click.option("--dt", type=Real(), default=0.01, show_default=True,
              help="ODE time step when the ODE is integrated on the fly.")
@click.option("--method", type=_choice(["euler", "rk4"]), default="euler", show_default=True)
@click.option("--t-min", type=Real(), default=0.1, show_default=True,
              help="Start of the deviation window.")
@click.option("--t-max", type=Real(), default=None,
              help="End of the deviation window.  [default: last time covered by both]")
def compare(run_path, ode_path, reference, floor, plot, dt, method, t_min, t_max) -> None:
    """Print the deviation of a run from its theory (mean ± s.e.m. over seeds)."""
    from analysis.compare import (TheoryUnavailable, deviations, format_table, integrate_run,
                                  load_ode_file, ode_curves, reference_curves)
    from analysis.deviation import aggregate, universality_verdict
    import fastsgd

    from pathlib import Path

    if ode_path and reference:
        raise click.UsageError("give ODE.h5 or --reference, not both")
    _positive_dt(dt)
    if plot and not Path(plot).resolve().parent.is_dir():
        raise click.UsageError(f"--plot: the folder {str(Path(plot).parent)!r} does not exist")
    run = _load_run(run_path)

    def theory_for(target):
        try:
            if reference:
                return reference_curves(target, _load_run(reference, "--reference"))
            if ode_path and target is run:
                return load_ode_file(ode_path, target)
            return ode_curves(target, integrate_run(target, dt=dt, method=method))
        except (TheoryUnavailable, NotImplementedError, ValueError,
                fastsgd.RunFileError) as exc:
            raise click.UsageError(str(exc)) from None

    window = dict(t_min=t_min, t_max=t_max)
    theory = theory_for(run)
    if theory.kind == "ode":  # the floor's ODE is integrated with the same step and method
        dt, method = theory.dt, theory.method
    d_run = deviations(run, theory, **window)
    title = (f"{run.path}: deviation from {theory.source} "
             f"({'ODE' if theory.kind == 'ode' else 'reference run'})")
    click.echo(format_table({k: aggregate(v) for k, v in d_run.items()}, title))
    if floor:
        floor_run = _load_run(floor, "--floor")
        if (floor_run.config.N, floor_run.config.D) != (run.config.N, run.config.D):
            raise click.UsageError("--floor: its (N, D) differ from the run's")
        d_floor = deviations(floor_run, theory_for(floor_run), **window)
        click.echo("")
        click.echo(format_table({k: aggregate(v) for k, v in d_floor.items()},
                                f"floor {floor_run.path}"))
        verdict = universality_verdict(d_run["eg_mc"], d_floor["eg_mc"])
        click.echo(f"\nverdict (eg_mc): {verdict.verdict}; cell {verdict.cell}, floor "
                   f"{verdict.floor}; paired difference {verdict.paired_mean:.4g} ± "
                   f"{verdict.paired_sem:.2g} (z = {verdict.paired_z:.2f})")
    if plot:
        from analysis.plots import plot_comparison
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

    try:
        rows = run_sweep(grid_path, out, scheduler=scheduler, workers=workers,
                         echo=lambda line: click.echo(line, err=True))
    except GridError as exc:
        raise click.UsageError(str(exc)) from None
    failed = sum(r.get("verdict") == "failed" for r in rows)
    if failed:
        click.echo(f"fastsgd sweep: {failed} cell(s) failed (see the error column of "
                   f"summary.csv); rerun the same command to retry them", err=True)
        raise SystemExit(EXIT_WRITE)


@cli.command()
@click.argument("source", metavar="DIR|RUN.h5", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
def plot(source, out) -> None:
    """Heat maps of a sweep's deviation over (m, α), or a run's trajectories with its ODE."""
    import csv
    from pathlib import Path

    src, out_path = Path(source), Path(out)
    if not out_path.resolve().parent.is_dir():
        raise click.UsageError(f"--out: the folder {str(out_path.parent)!r} does not exist")
    if src.is_dir():
        summary = src / "summary.csv"
        if not summary.is_file():
            raise click.UsageError(f"DIR: {src} has no summary.csv (not a sweep folder)")
        from analysis.plots import plot_heatmaps
        with open(summary) as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "verdict" not in rows[0]:
            raise click.UsageError(f"DIR: {summary} is not a fastsgd sweep summary")
        plot_heatmaps(rows, out_path)
    else:
        from analysis.compare import TheoryUnavailable, integrate_run, ode_curves
        from analysis.plots import plot_comparison
        run = _load_run(source)
        try:
            theory = ode_curves(run, integrate_run(run))
        except (TheoryUnavailable, NotImplementedError) as exc:
            raise click.UsageError(f"{exc}; use fastsgd compare --reference ... --plot") from None
        plot_comparison(run, theory, out_path)
    click.echo(f"wrote {out_path}")


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
        code = EXIT_WRITE
    except fastsgd.Terminated:
        click.echo(f"{prefix}: terminated (SIGTERM); the file holds every record so far",
                   err=True)
        code = EXIT_SIGTERM
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_OK
    else:
        code = EXIT_OK
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
