"""fastsgd: online SGD of two-layer networks in the hidden manifold model, with Gaussian-mixture
latents, at the speed of the machine's GEMM (see docs/model.md)."""

__version__ = "0.1.0"

from fastsgd.config import ConfigError, SimConfig  # noqa: E402
from fastsgd.io import OutputExistsError, Run, RunFileError, load  # noqa: E402
from fastsgd.problem import initial_state  # noqa: E402
from fastsgd.simulation import Terminated, WriteError, simulate  # noqa: E402

__all__ = ["ConfigError", "OutputExistsError", "Run", "RunFileError", "SimConfig", "Terminated",
           "WriteError", "initial_state", "load", "simulate", "__version__"]
