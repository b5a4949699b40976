"""The simulation configuration: one frozen dataclass, validated in one place (docs/model.md §8.3).

:class:`SimConfig` is the one source of every default (:data:`DEFAULTS` reads them off the
dataclass for the CLI, the output names and the sweep) and :func:`gaussian_latent` the one
definition of a cell's Gaussian-latent twin (the floor, docs/model.md §6).
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
import math
import os
import numbers
from dataclasses import dataclass
from typing import Any

from analysis.activations import ACTIVATIONS, FOLDS
from fastsgd.input_law import moments_method
from fastsgd.matched import LATENT_LAWS, matched_method
from fastsgd.sampling import MEAN_GEOMETRIES, STANDARDIZATIONS, TEACHERS, WEIGHT_SCHEMES
from fastsgd.sgd import INPUT_MODELS

PRECISIONS = ("f64", "mixed")

# Upper bounds keep every int64 step count and every memory figure far from overflow.
MAX_DIM = 10_000_000          # N, D
MAX_UNITS = 10_000            # K, M, m
MAX_STEPS = 10 ** 15
MAX_SEEDS = 100_000
MAX_RECORDS = 1_000_000
MAX_TEST_SIZE = 1_000_000_000
MAX_SEED = 2 ** 63 - 1
MAX_BLAS_THREADS = 1024
MAX_REAL = 1e6                # alpha, lr, sigma: far beyond any meaningful value, far from overflow
MAX_MOMENT_SAMPLES = 10 ** 10
#: Monte Carlo matched laws hold a dense D × D covariance and its eigendecomposition.
MAX_MONTE_CARLO_D = 8192
#: Monte Carlo moments need at least this many samples per latent dimension.
MIN_MOMENT_SAMPLES_PER_D = 10
#: Rows of a latent-data file.
MAX_DATA_ROWS = 10 ** 12


_UNSET = object()


class ConfigError(ValueError):
    """An invalid parameter: ``parameter`` names it (a SimConfig field or an argument of the
    API), ``allowed`` says what is allowed and ``value`` is what was given (absent when the
    problem is not one value). The message reads "<parameter> must be <allowed>, got <value>"
    unless ``message`` gives another sentence; callers such as the CLI use the fields, never
    the text."""

    def __init__(self, parameter: str, allowed: str, value: Any = _UNSET, *,
                 message: str | None = None) -> None:
        self.parameter = parameter
        self.allowed = allowed
        self.value = None if value is _UNSET else value
        if message is None:
            message = f"{parameter} must be {allowed}"
            if value is not _UNSET:
                message += f", got {value!r}"
        super().__init__(message)

    def __reduce__(self):  # pickles (Dask, multiprocessing) with its fields and message
        value = _UNSET if self.value is None else self.value
        return (_rebuild_config_error,
                (type(self), self.parameter, self.allowed, value, str(self)))


def _rebuild_config_error(cls, parameter, allowed, value, message):
    error = ConfigError.__new__(cls)
    ConfigError.__init__(error, parameter, allowed, value, message=message)
    return error


def parse_count(value: Any, name: str, low: int, high: int) -> int:
    """An integer count from an int, an integral float (1e6) or a string ('1e6', '1_000_000').

    Raises ConfigError naming ``name`` and the range [low, high] for anything else.
    """
    error = ConfigError(name, f"an integer in [{low}, {high}]", value)
    number: Any = value
    if isinstance(value, bool):
        raise error
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text, 10)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise error from None
    if isinstance(number, numbers.Integral):
        result = int(number)
    elif isinstance(number, numbers.Real):
        x = float(number)
        if not math.isfinite(x) or x != math.floor(x):
            raise error
        result = int(x)
    else:
        raise error
    if not low <= result <= high:
        raise error
    return result


def _real(value: Any, name: str, *, minimum: float, strict: bool = False) -> float:
    relation = ">" if strict else ">="
    error = ConfigError(name, f"a finite number {relation} {minimum:g} and <= {MAX_REAL:g}",
                        value)
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise error
    try:
        x = float(value)
    except ValueError:
        raise error from None
    if not math.isfinite(x) or x < minimum or (strict and x == minimum) or x > MAX_REAL:
        raise error
    return x


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(name, f"one of {', '.join(choices)}", value)
    return value


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines a simulation's results (docs/model.md §3.2, §8.3).

    Validated on creation; invalid values raise :class:`ConfigError`. Counts accept integral
    floats and strings such as ``1e6`` or ``"1_000_000"``; ``block_size=None`` becomes D, and
    explicit ``weights`` become a tuple of m floats, kept as given (the sampler normalises them
    by their sum), so that a config survives a JSON round trip unchanged.
    """

    N: int = 1000
    D: int = 500
    K: int = 2
    M: int = 2
    m: int = 1
    alpha: float = 0.0
    block_size: int | None = None
    weights: str | tuple[float, ...] = "uniform"
    standardize: str = "none"
    f: str = "sign"
    g: str = "erf"
    lr: float = 0.2
    train_second_layer: bool = True
    steps: int = 1_000_000
    seeds: int = 1
    seed: int = 0
    records: int = 200
    test_size: int = 10_000
    precision: str = "f64"
    sigma: float = 0.0
    sample_seed: int | None = None
    input_model: str = "hmm"
    first_seed_index: int = 0
    blas_threads: int = 1
    means: str = "vector"
    latent: str = "mixture"
    teacher: str = "random"
    moment_samples: int = 1_000_000
    center_inputs: bool = False
    latent_data: str | None = None
    latent_data_shape: tuple[int, int] | None = None
    latent_data_sha256: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("N", "D"):
            set_(self, name, parse_count(getattr(self, name), name, 1, MAX_DIM))
        for name in ("K", "M", "m"):
            set_(self, name, parse_count(getattr(self, name), name, 1, MAX_UNITS))
        set_(self, "steps", parse_count(self.steps, "steps", 1, MAX_STEPS))
        set_(self, "seeds", parse_count(self.seeds, "seeds", 1, MAX_SEEDS))
        set_(self, "records", parse_count(self.records, "records", 2, MAX_RECORDS))
        set_(self, "test_size", parse_count(self.test_size, "test_size", 1, MAX_TEST_SIZE))
        set_(self, "blas_threads",
             parse_count(self.blas_threads, "blas_threads", 1, MAX_BLAS_THREADS))
        set_(self, "seed", parse_count(self.seed, "seed", 0, MAX_SEED))
        set_(self, "first_seed_index",
             parse_count(self.first_seed_index, "first_seed_index", 0, MAX_SEED - MAX_SEEDS))
        if self.sample_seed is not None:
            set_(self, "sample_seed", parse_count(self.sample_seed, "sample_seed", 0, MAX_SEED))
        set_(self, "alpha", _real(self.alpha, "alpha", minimum=0.0))
        set_(self, "lr", _real(self.lr, "lr", minimum=0.0, strict=True))
        set_(self, "sigma", _real(self.sigma, "sigma", minimum=0.0))
        if self.block_size is None:
            set_(self, "block_size", self.D)
        else:
            block = parse_count(self.block_size, "block_size", 1, self.D)
            if self.D % block:
                divisors = [d for d in range(1, min(self.D, 10 ** 6) + 1) if self.D % d == 0]
                shown = ", ".join(map(str, divisors if len(divisors) <= 12
                                      else divisors[:6] + ["…"] + divisors[-2:]))
                raise ConfigError("block_size", f"a divisor of D = {self.D} ({shown})", block)
            set_(self, "block_size", block)
        set_(self, "weights", self._validated_weights())
        set_(self, "moment_samples",
             parse_count(self.moment_samples, "moment_samples", 1, MAX_MOMENT_SAMPLES))
        _choice(self.standardize, "standardize", STANDARDIZATIONS)
        _choice(self.means, "means", MEAN_GEOMETRIES)
        _choice(self.latent, "latent", LATENT_LAWS)
        _choice(self.teacher, "teacher", TEACHERS)
        _choice(self.f, "f", FOLDS)
        _choice(self.g, "g", ACTIVATIONS)
        _choice(self.precision, "precision", PRECISIONS)
        _choice(self.input_model, "input_model", INPUT_MODELS)
        for name in ("train_second_layer", "center_inputs"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, "True or False", getattr(self, name))
        if self.center_inputs and self.input_model != "hmm":
            raise ConfigError("center_inputs", "False with input_model = equivalent_gaussian",
                              True, message="center_inputs needs input_model = hmm (the "
                              "equivalent Gaussian inputs have the known mean a)")
        if self.standardize == "sample" and self.D < 2:
            raise ConfigError("standardize", "none, population or whiten when D = 1",
                              message="standardize = sample needs D >= 2, got D = 1")
        self._check_latent_data()
        self._check_latent_law()
        if self.blas_threads > 1 and self.seeds > 1:
            raise ConfigError("blas_threads", "1 when seeds > 1",
                              message=f"blas_threads > 1 is allowed only with seeds = 1 (got "
                                      f"seeds = {self.seeds}); seeds run in parallel instead")

    def _check_latent_law(self) -> None:
        """The combinations of §10.2–10.3 that are refused."""
        if self.teacher == "aligned":
            positive = self.m if isinstance(self.weights, str) else sum(
                x > 0 for x in self.weights)
            if self.alpha == 0.0 or positive < 2:
                raise ConfigError("teacher", "random when Σ_c − I = 0", "aligned",
                                  message="teacher = aligned needs a mixture with Σ_c ≠ I "
                                          "(m ≥ 2 weighted components and alpha > 0)")
            if self.means == "scalar" and self.standardize == "sample" and \
                    self.block_size == self.D:
                raise ConfigError("teacher", "random with scalar means, sample and B = D",
                                  "aligned", message="teacher = aligned: sample "
                                  "standardization removes the aligned direction (∝ 1) when "
                                  "means = scalar and block_size = D")
        if self.latent == "matched_gaussian" and self.matched_method == "monte_carlo":
            if self.D > MAX_MONTE_CARLO_D:
                raise ConfigError("D", f"at most {MAX_MONTE_CARLO_D} for a Monte Carlo matched "
                                  "law", self.D, message=f"D must be at most "
                                  f"{MAX_MONTE_CARLO_D} for latent = matched_gaussian with "
                                  f"standardize = sample and this block structure (a dense "
                                  f"D × D covariance), got {self.D}")
            least = MIN_MOMENT_SAMPLES_PER_D * self.D
            if self.moment_samples < least:
                raise ConfigError("moment_samples", f"at least {least} (10·D) for a Monte "
                                  "Carlo matched law", self.moment_samples)

    def _check_latent_data(self) -> None:
        """latent = data (docs/model.md §11.1): a data file, and none of the mixture's fields.
        A new configuration (no content hash yet) reads and checks the file and records its
        absolute location, shape and content hash; a stored one (hash given) is taken as
        recorded: runs check the file against the hash when they read it."""
        if self.latent_data is None:
            if self.latent == "data":
                raise ConfigError("latent_data", "a file of latent vectors (.npy, or "
                                  "FILE.h5:DATASET) when latent = data")
            if self.latent_data_shape is not None or self.latent_data_sha256 is not None:
                raise ConfigError("latent_data", "set when latent_data_shape or "
                                  "latent_data_sha256 is")
            return
        if self.latent == "mixture":
            raise ConfigError("latent", "data (or matched_gaussian, its matched twin) with "
                              "latent_data", self.latent)
        for name in DATA_FIXED_FIELDS:
            if getattr(self, name) != DEFAULTS[name]:
                raise ConfigError(name, f"{DEFAULTS[name]!r} (its default)",
                                  getattr(self, name), message=f"{name} has no meaning for a "
                                  f"data latent: leave it at {DEFAULTS[name]!r}, got "
                                  f"{getattr(self, name)!r}")
        if self.block_size != self.D:
            raise ConfigError("block_size", f"D = {self.D} (its default)", self.block_size,
                              message=f"block_size has no meaning for a data latent: leave it "
                                      f"at D = {self.D}, got {self.block_size}")
        if not isinstance(self.latent_data, (str, os.PathLike)):
            raise ConfigError("latent_data", "a file path", self.latent_data)
        if self.latent_data_sha256 is None:
            self._describe_latent_data()
        else:
            self._check_recorded_latent_data()

    def _describe_latent_data(self) -> None:
        from fastsgd.latent_data import describe
        with latent_data_errors():
            data = describe(os.fspath(self.latent_data), self.D, self.standardize)
        object.__setattr__(self, "latent_data", data.location)
        object.__setattr__(self, "latent_data_shape", data.shape)
        object.__setattr__(self, "latent_data_sha256", data.sha256)

    def _check_recorded_latent_data(self) -> None:
        from fastsgd.latent_data import absolute_location, check_shape, is_sha256
        object.__setattr__(self, "latent_data", absolute_location(os.fspath(self.latent_data)))
        if not is_sha256(self.latent_data_sha256):
            raise ConfigError("latent_data_sha256", "a SHA-256 hex digest (64 hex digits)",
                              self.latent_data_sha256)
        shape = self.latent_data_shape
        try:
            shape = tuple(parse_count(n, "latent_data_shape", 1, MAX_DATA_ROWS) for n in shape)
        except TypeError:
            shape = ()
        if len(shape) != 2:
            raise ConfigError("latent_data_shape", "two positive integers (P, D)",
                              self.latent_data_shape)
        with latent_data_errors():
            check_shape(shape, self.D, self.latent_data)
        object.__setattr__(self, "latent_data_shape", shape)

    def _validated_weights(self) -> str | tuple[float, ...]:
        w = self.weights
        if isinstance(w, str):
            return _choice(w, "weights", WEIGHT_SCHEMES)
        error = ConfigError("weights", f"{', '.join(WEIGHT_SCHEMES)} or a list of m = {self.m} "
                            "non-negative numbers", w)
        try:
            values = [float(x) for x in w]
        except (TypeError, ValueError):
            raise error from None
        if (len(values) != self.m or any(isinstance(x, bool) for x in w)
                or not all(math.isfinite(x) and x >= 0 for x in values)):
            raise error
        if math.fsum(values) <= 0:
            raise ConfigError("weights", "numbers with a positive sum", w,
                              message=f"weights must have a positive sum, got {w!r}")
        return tuple(values)

    # ------------------------------------------------------------------ derived values
    @property
    def delta(self) -> float:
        """δ = D/N."""
        return self.D / self.N

    @property
    def n_blocks(self) -> int:
        """Number of independent latent blocks per sample, D/B."""
        return self.D // self.block_size

    @property
    def sample_entropy(self) -> int:
        """Entropy of the data streams (s,4,·) and (s,5,·): ``sample_seed``, else ``seed``."""
        return self.seed if self.sample_seed is None else self.sample_seed

    @property
    def matched_method(self) -> str:
        """How the matched law of this latent is obtained (docs/model.md §10.2): "data" for a
        data latent (its empirical moments, §11.3)."""
        if self.latent_data is not None:
            return "data"
        return matched_method(self.m, self.alpha, self.means, self.block_size, self.D,
                              self.standardize)

    @property
    def seed_indices(self) -> range:
        return range(self.first_seed_index, self.first_seed_index + self.seeds)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(out["weights"], tuple):
            out["weights"] = list(out["weights"])
        if out["latent_data_shape"] is not None:
            out["latent_data_shape"] = list(out["latent_data_shape"])
        return out

    def to_json(self) -> str:
        """The config as JSON; fields of OMITTED_AT_DEFAULT are left out at their defaults, so
        that configs made before they existed keep their text, hash and file name (§10)."""
        data = {name: value for name, value in self.to_dict().items()
                if not (name in OMITTED_AT_DEFAULT and value == DEFAULTS[name])}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SimConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(unknown[0], f"a field of SimConfig ({', '.join(sorted(names))})",
                              message=f"unknown configuration field(s): {', '.join(unknown)}")
        values = dict(data)
        for name in ("weights", "latent_data_shape"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "SimConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "SimConfig":
        """A copy with some fields changed (validated again)."""
        data = self.to_dict()
        if "D" in changes and "block_size" not in changes and self.block_size == self.D:
            data["block_size"] = None
        if changes.get("latent_data", data["latent_data"]) != data["latent_data"] and \
                "latent_data_sha256" not in changes:   # another file: read and check it
            data["latent_data_shape"] = data["latent_data_sha256"] = None
        data.update(changes)
        cfg = SimConfig.from_dict(data)
        if cfg.latent == "data" and cfg.standardize != self.standardize and \
                cfg.latent_data_sha256 == self.latent_data_sha256 is not None:
            config_data_law(cfg)   # the same file, another standardization
        return cfg


#: Every field's default, read off the dataclass: the one source of the CLI's defaults, the
#: output names and the sweep's derived keys.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(SimConfig)}

#: Fields added by docs/model.md §10: left out of the JSON (hash, file name) at their defaults.
OMITTED_AT_DEFAULT = ("means", "latent", "teacher", "moment_samples", "center_inputs",
                      "latent_data", "latent_data_shape", "latent_data_sha256")

#: The fields that define the latent law; a Gaussian latent has them at their defaults.
LATENT_LAW_FIELDS = ("m", "alpha", "weights", "block_size", "standardize", "means", "latent",
                     "moment_samples", "latent_data", "latent_data_shape", "latent_data_sha256")

#: The mixture's fields, which a data latent (docs/model.md §11.1) must leave at their defaults.
DATA_FIXED_FIELDS = ("m", "alpha", "means", "weights", "teacher")


@contextmanager
def latent_data_errors():
    """A :class:`fastsgd.latent_data.LatentDataError` inside becomes a ConfigError naming
    latent_data (one line, exit 2 on the command line)."""
    from fastsgd.latent_data import LatentDataError
    try:
        yield
    except LatentDataError as exc:
        raise ConfigError("latent_data", "a usable file of latent vectors",
                          message=f"latent_data {exc}") from None


def config_data_law(cfg: SimConfig):
    """The standardized empirical law of ``cfg``'s data file (docs/model.md §11), the file
    checked against the configuration's content hash."""
    from fastsgd.latent_data import data_law
    with latent_data_errors():
        return data_law(cfg.latent_data, cfg.latent_data_sha256, cfg.standardize)


def gaussian_latent(cfg: SimConfig, **changes: Any) -> SimConfig:
    """The Gaussian-latent twin of ``cfg`` (docs/model.md §6): the latent-law fields reset to
    their defaults (m = 1, α = 0, uniform weights, B = D, no standardization, vector means, a
    mixture latent), everything else identical, then ``changes`` applied."""
    return cfg.replace(**{**{name: DEFAULTS[name] for name in LATENT_LAW_FIELDS}, **changes})


def matched_is_standard_normal(cfg: SimConfig) -> bool:
    """True when the matched Gaussian of ``cfg``'s latent (§10.2) is N(0, I_D): the standardized
    latent has mean 0 and covariance I (whiten; population with independent coordinates; the
    Gaussian latent itself). A data latent's is N(0, I) only when whitened (§11.3)."""
    gaussian = cfg.alpha == 0.0
    if cfg.standardize == "whiten":
        return True
    if cfg.latent_data is not None:
        return False
    if cfg.standardize == "population":
        return gaussian or cfg.m == 1 or cfg.block_size == 1
    return cfg.standardize == "none" and gaussian


def canonical(cfg: SimConfig) -> SimConfig:
    """The simplest configuration that samples the same law with the same F, teacher and
    student as ``cfg`` (runs are reused by law, not by config, docs/model.md §10.4): a matched
    latent that is N(0, I) becomes the Gaussian latent (random teacher) or the matched whiten
    latent of the same mixture (aligned teacher, which the mixture defines); the matched law of
    a sample-standardized exchangeable latent, N(0, D/(D − 1)·P), becomes that of the Gaussian
    latent (random teacher); center_inputs is dropped where E x = 0 exactly; moment_samples is
    reset where no Monte Carlo law uses it."""
    if cfg.center_inputs and input_mean_vanishes(cfg):
        cfg = cfg.replace(center_inputs=False)     # x − 0: the same inputs
    if cfg.moment_samples != DEFAULTS["moment_samples"] and not (
            cfg.latent == "matched_gaussian" and cfg.matched_method == "monte_carlo"
            or input_mean_method(cfg) == "monte_carlo" and (   # E x or the moments theory
                cfg.center_inputs or latent_mean_vanishes(cfg))):
        cfg = cfg.replace(moment_samples=DEFAULTS["moment_samples"])   # unused by this law
    if cfg.latent != "matched_gaussian":
        return cfg
    if matched_is_standard_normal(cfg):
        if cfg.teacher == "random":
            return gaussian_latent(cfg)
        return cfg.replace(standardize="whiten", moment_samples=DEFAULTS["moment_samples"])
    if cfg.standardize == "sample" and cfg.matched_method == "exact" and cfg.teacher == "random":
        # an exchangeable latent, sample-standardized: N(0, D/(D−1)·P) whatever the mixture
        return gaussian_latent(cfg, standardize="sample", latent="matched_gaussian")
    return cfg


def latent_mean_vanishes(cfg: SimConfig) -> bool:
    """E c = 0 for the standardized latent (and its matched twin, docs/model.md §10.5):
    population and whiten; sample with scalar means (exchangeable coordinates); α = 0. For a
    data latent (and its matched twin) population and whiten only (§11.2)."""
    if cfg.standardize in ("population", "whiten"):
        return True
    if cfg.latent_data is not None:
        return False
    if cfg.alpha == 0.0:
        return True
    return cfg.standardize == "sample" and cfg.means == "scalar"


def input_mean_vanishes(cfg: SimConfig) -> bool:
    """E x = 0 exactly: E c = 0 and either f linear (E x = F E c/√D), or an odd fold (not relu)
    of a latent whose law is symmetric, c and −c alike: one centred Gaussian (the matched latent,
    m = 1 or α = 0) or the sample-standardized scalar-mean mixture with B = D (exactly the
    sample-standardized Gaussian, §10.1)."""
    if not latent_mean_vanishes(cfg):
        return False
    if cfg.latent == "data":   # an empirical law: no symmetry to rely on
        return cfg.f == "linear"
    symmetric = (cfg.latent == "matched_gaussian" or cfg.m == 1 or cfg.alpha == 0.0
                 or (cfg.standardize == "sample" and cfg.means == "scalar"
                     and cfg.block_size == cfg.D))
    return cfg.f == "linear" or (symmetric and cfg.f != "relu")


def input_mean_method(cfg: SimConfig) -> str:
    """How a run's input moments are found (docs/model.md §10.5): "exact" or "monte_carlo";
    a data latent's are sums over its rows, exact for its empirical law (§11.4)."""
    if cfg.latent == "data":
        return "exact"
    return moments_method(cfg.m, cfg.block_size, cfg.D, cfg.standardize,
                          cfg.latent == "matched_gaussian", cfg.f)


def standard_normal_twin(cfg: SimConfig, **changes: Any) -> SimConfig:
    """The N(0, I) floor of a cell (docs/model.md §10.4): its config with latent =
    matched_gaussian and standardize = whiten (c = z; the same F, student and teacher, aligned
    included), in canonical form, then ``changes``."""
    return canonical(cfg.replace(latent="matched_gaussian", standardize="whiten", **changes))


def matched_twin(cfg: SimConfig, **changes: Any) -> SimConfig:
    """The matched-Gaussian twin of a cell (docs/model.md §10.2, §10.4), in canonical form."""
    return canonical(cfg.replace(latent="matched_gaussian", **changes))
