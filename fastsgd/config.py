"""The simulation configuration: one frozen dataclass, validated in one place (docs/model.md §8.3).

:class:`SimConfig` is the one source of every default (:data:`DEFAULTS` reads them off the
dataclass for the CLI, the output names and the sweep) and :func:`gaussian_latent` the one
definition of a cell's Gaussian-latent twin (the floor, docs/model.md §6).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

from analysis.activations import ACTIVATIONS, FOLDS
from fastsgd.sampling import STANDARDIZATIONS, WEIGHT_SCHEMES
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
        _choice(self.standardize, "standardize", STANDARDIZATIONS)
        _choice(self.f, "f", FOLDS)
        _choice(self.g, "g", ACTIVATIONS)
        _choice(self.precision, "precision", PRECISIONS)
        _choice(self.input_model, "input_model", INPUT_MODELS)
        if not isinstance(self.train_second_layer, bool):
            raise ConfigError("train_second_layer", "True or False", self.train_second_layer)
        if self.standardize == "sample" and self.D < 2:
            raise ConfigError("standardize", "none, population or whiten when D = 1",
                              message="standardize = sample needs D >= 2, got D = 1")
        if self.blas_threads > 1 and self.seeds > 1:
            raise ConfigError("blas_threads", "1 when seeds > 1",
                              message=f"blas_threads > 1 is allowed only with seeds = 1 (got "
                                      f"seeds = {self.seeds}); seeds run in parallel instead")

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
    def seed_indices(self) -> range:
        return range(self.first_seed_index, self.first_seed_index + self.seeds)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(out["weights"], tuple):
            out["weights"] = list(out["weights"])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SimConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(unknown[0], f"a field of SimConfig ({', '.join(sorted(names))})",
                              message=f"unknown configuration field(s): {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("weights"), list):
            values["weights"] = tuple(values["weights"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "SimConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "SimConfig":
        """A copy with some fields changed (validated again)."""
        data = self.to_dict()
        if "D" in changes and "block_size" not in changes and self.block_size == self.D:
            data["block_size"] = None
        data.update(changes)
        return SimConfig.from_dict(data)


#: Every field's default, read off the dataclass: the one source of the CLI's defaults, the
#: output names and the sweep's derived keys.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(SimConfig)}

#: The fields that define the latent law; a Gaussian latent has them at their defaults.
LATENT_LAW_FIELDS = ("m", "alpha", "weights", "block_size", "standardize")


def gaussian_latent(cfg: SimConfig, **changes: Any) -> SimConfig:
    """The Gaussian-latent twin of ``cfg`` (docs/model.md §6, the noise floor): the latent-law
    fields reset to their defaults (m = 1, α = 0, uniform weights, B = D, no
    standardization), everything else identical, then ``changes`` applied."""
    return cfg.replace(**{**{name: DEFAULTS[name] for name in LATENT_LAW_FIELDS}, **changes})
