"""The runner: trains one seed index from step 0 to ``steps`` and records it (docs/model.md §3–§4).

Per generation block (docs/model.md §3.3): draw GEN_BLOCK latents, one GEMM C·[F/√D | W̃ᵀ/√D] for
the pre-folding inputs and teacher fields, then :func:`fastsgd.sgd.sgd_steps` over the block's
rows, stopping at each record step to take the observables (:func:`take_record`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from analysis.activations import ACTIVATION_CODES, folding_coefficients
from analysis.integrals import generalisation_error
from fastsgd import io
from fastsgd.config import SimConfig
from fastsgd.observables import (field_shape, order_parameters, student_fields, teacher_overlap,
                                 test_set_statistics)
from fastsgd.problem import (SeedProblem, Stopped, build_problem, latents_to_fields,
                             problem_initial_state)
from fastsgd.sampling import draw_latents, fill_standard_normal
from fastsgd.sgd import (SgdBuffers, all_finite, sgd_buffers, sgd_parameters, sgd_steps)
from fastsgd.streams import SeedStreams

#: Steps per generation block: draws and the GEMM run on this fixed grid from step 0.
GEN_BLOCK = 256


def take_record(cfg: SimConfig, problem: SeedProblem, w: np.ndarray, v: np.ndarray
                ) -> dict[str, np.ndarray | float]:
    """All observables of one record (docs/model.md §4) for the current weights."""
    _, b, _, zeta = folding_coefficients(cfg.f)
    ops = order_parameters(w, problem.features, problem.teacher, b, zeta)
    T = teacher_overlap(problem.teacher)
    if cfg.f == "relu":
        eg = math.nan  # a ≠ 0: the Gaussian-equivalent closed form does not apply
    else:
        eg = generalisation_error(ops["Q"], ops["R"], T, v, problem.A, g=cfg.g)
    lam = student_fields(problem.test_inputs, w)
    stats = test_set_statistics(lam, problem.test_nu, problem.test_y, v,
                                ACTIVATION_CODES[cfg.g])
    record = {"Q": ops["Q"], "R": ops["R"], "W": ops["W"], "Sigma": ops["Sigma"], "v": v,
              "eg": eg, "eg_mc": stats["eg_mc"], "emp_Q": stats["Q"], "emp_R": stats["R"],
              "emp_T": problem.test_T, "lambda_mean": stats["lambda_mean"],
              "lambda_skewness": stats["lambda_skewness"],
              "lambda_kurtosis": stats["lambda_kurtosis"]}
    if problem.input_mean is not None:   # the fields the centring removes: w_k·E x/√N
        record["mean_fields"] = w @ problem.input_mean / math.sqrt(cfg.N)
    return record


@dataclass
class _Block:
    """One generation block's buffers: latents, the GEMM output U and the kernel's buffers."""

    latent: np.ndarray            # (GEN_BLOCK, D)
    U: np.ndarray                 # (GEN_BLOCK, N + M)
    sgd: SgdBuffers


class SeedRunner:
    """Runs one seed index from step 0 to ``cfg.steps``, writing into position i of the file."""

    def __init__(self, cfg: SimConfig, i: int, writer: io.RunWriter, steps: np.ndarray,
                 stop: threading.Event, progress=None) -> None:
        self.cfg = cfg
        self.i = i
        self.s = cfg.first_seed_index + i
        self.writer = writer
        self.record_steps = steps
        self.stop = stop
        self.progress = progress

    def streams(self) -> SeedStreams:
        return SeedStreams.for_seed(self.cfg.seed, self.cfg.sample_entropy, self.s)

    def run(self) -> str:
        """Build the seed's problem, write its constants, train; returns the final status."""
        i = self.i
        if self.stop.is_set():
            return "pending"
        self.writer.set_status(i, "running")
        streams = self.streams()
        try:
            problem = build_problem(self.cfg, streams, self.stop)
        except Stopped:
            self.writer.set_status(i, "interrupted")
            return "interrupted"
        self._write_constants(problem)
        status, diverged_at = self.train(problem, streams)
        self.writer.set_status(i, status, diverged_at)
        return status

    def _write_constants(self, problem: SeedProblem) -> None:
        state = problem_initial_state(problem)
        values = {f"initial_state/{name}": getattr(state, name)
                  for name in ("rhos", "r", "sigma", "omega", "W", "T", "T_tilde", "v", "A")}
        nu_skewness, nu_kurtosis = field_shape(problem.test_nu)
        values.update({"T": state.T, "A": problem.A,
                       "empirical/nu_mean": problem.test_nu.mean(axis=0),
                       "empirical/nu_skewness": nu_skewness,
                       "empirical/nu_kurtosis": nu_kurtosis,
                       "mixture/means": problem.mixture.means,
                       "mixture/weights": problem.mixture.weights})
        if problem.input_mean is not None:
            values["input_mean"] = problem.input_mean
        self.writer.write(self.i, values)

    def _new_block(self) -> _Block:
        cfg = self.cfg
        dtype = np.float32 if cfg.precision == "mixed" else np.float64
        return _Block(latent=np.empty((GEN_BLOCK, cfg.D), dtype=dtype),
                      U=np.empty((GEN_BLOCK, cfg.N + cfg.M), dtype=dtype),
                      sgd=sgd_buffers(GEN_BLOCK, cfg.N, cfg.K,
                                      cfg.input_model == "equivalent_gaussian"))

    def _generate(self, block: _Block, problem: SeedProblem, operand: tuple,
                  streams: SeedStreams) -> None:
        """Fill the block: latents, U = C·[F/√D | W̃ᵀ/√D] (+ offset), ξ and the label noise."""
        draw_latents(problem.law, streams.train_latent, streams.train_labels, streams.train_rows,
                     block.latent)
        latents_to_fields(block.latent, *operand, out=block.U)
        if self.cfg.input_model == "equivalent_gaussian":
            fill_standard_normal(streams.train_xi, block.sgd.xi)
        if self.cfg.sigma > 0:
            fill_standard_normal(streams.train_noise, block.sgd.label_noise)
            block.sgd.label_noise[:] *= self.cfg.sigma

    def _finish(self, w: np.ndarray, v: np.ndarray, status: str,
                step: int | None = None) -> tuple[str, int | None]:
        self.writer.write(self.i, {"final/w": w, "final/v": v})
        return status, step

    def train(self, problem: SeedProblem, streams: SeedStreams) -> tuple[str, int | None]:
        """SGD from w(0), v(0) to ``cfg.steps`` with every record; returns (status, the step of
        divergence or None). Stops at a block boundary when the stop flag is set."""
        cfg = self.cfg
        w, v = problem.w.copy(), problem.v.copy()
        operand = (problem.generator, problem.offset)
        if cfg.precision == "mixed":
            operand = tuple(None if a is None else a.astype(np.float32) for a in operand)
        block = self._new_block()
        params = sgd_parameters(problem.A, f=cfg.f, g=cfg.g, lr=cfg.lr,
                                train_second_layer=cfg.train_second_layer,
                                input_model=cfg.input_model, input_mean=problem.input_mean)
        records = _RecordCursor(self, problem, w, v)
        step = 0
        while step < cfg.steps:
            if self.stop.is_set():
                return self._finish(w, v, "interrupted")
            self._generate(block, problem, operand, streams)
            block_start, block_stop = step, min(step + GEN_BLOCK, cfg.steps)
            while step < block_stop:
                stop_at = records.next_stop(block_stop)
                bad = sgd_steps(block.U, step - block_start, stop_at - block_start, w, v,
                                params, block.sgd)
                if bad >= 0:
                    return self._finish(w, v, "diverged", block_start + bad)
                step = stop_at
                records.take_if_due(step)
            if not (all_finite(w) and all_finite(v)):  # once per block (docs/model.md §3.4)
                return self._finish(w, v, "diverged", step)
            if self.progress is not None:
                self.progress.update(block_stop - block_start)
        return self._finish(w, v, "ok")


class _RecordCursor:
    """The next record row of a seed; takes step 0's record on creation."""

    def __init__(self, runner: SeedRunner, problem: SeedProblem, w: np.ndarray,
                 v: np.ndarray) -> None:
        self.runner, self.problem, self.w, self.v = runner, problem, w, v
        self.steps = runner.record_steps
        self.row = 0
        self.take_if_due(0)

    def next_stop(self, block_stop: int) -> int:
        """The step the kernel must stop at: the block's end or the next record step."""
        if self.row < self.steps.shape[0]:
            return min(block_stop, int(self.steps[self.row]))
        return block_stop

    def take_if_due(self, step: int) -> None:
        if self.row < self.steps.shape[0] and step == self.steps[self.row]:
            record = take_record(self.runner.cfg, self.problem, self.w, self.v)
            self.runner.writer.write_record(self.runner.i, self.row, record)
            self.row += 1
