"""Random streams of one seed index (docs/model.md §3.3).

Every stream is ``Generator(PCG64(SeedSequence(entropy, spawn_key=key)))``: the same child that
``SeedSequence(entropy).spawn`` gives at that position, so each purpose has its own stream and
new streams are appended without moving the old ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES, TEACHER, MIXTURE, STUDENT, TRAIN, TEST, MOMENTS = range(7)
LATENT, LABELS, NOISE, XI, TRAIN_ROWS = range(5)   # children of (s,4)
TEST_LATENT, TEST_LABELS, TEST_XI, TEST_ROWS = range(4)   # children of (s,5)
MATCHED_LAW, INPUT_MOMENTS = range(2)   # children of (s,6), docs/model.md §10


def stream(entropy: int, *key: int) -> np.random.Generator:
    """The Generator of ``SeedSequence(entropy)`` at spawn key ``key``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=key)))


@dataclass
class SeedStreams:
    """The Generators of seed index s; ``sample_entropy`` feeds the data streams (s,4,·), (s,5,·)."""

    features: np.random.Generator
    teacher: np.random.Generator
    mixture: np.random.Generator
    student: np.random.Generator
    train_latent: np.random.Generator
    train_labels: np.random.Generator
    train_noise: np.random.Generator
    train_xi: np.random.Generator
    test_latent: np.random.Generator
    test_labels: np.random.Generator
    test_xi: np.random.Generator
    matched_moments: np.random.Generator   # (s,6,0), entropy ``seed`` (§10.2)
    input_moments: np.random.Generator     # (s,6,1), entropy ``seed`` (§10.5)
    train_rows: np.random.Generator        # (s,4,4), data-latent rows (§11)
    test_rows: np.random.Generator         # (s,5,3)

    @classmethod
    def for_seed(cls, seed: int, sample_entropy: int, s: int) -> "SeedStreams":
        return cls(
            features=stream(seed, s, FEATURES),
            teacher=stream(seed, s, TEACHER),
            mixture=stream(seed, s, MIXTURE),
            student=stream(seed, s, STUDENT),
            train_latent=stream(sample_entropy, s, TRAIN, LATENT),
            train_labels=stream(sample_entropy, s, TRAIN, LABELS),
            train_noise=stream(sample_entropy, s, TRAIN, NOISE),
            train_xi=stream(sample_entropy, s, TRAIN, XI),
            test_latent=stream(sample_entropy, s, TEST, TEST_LATENT),
            test_labels=stream(sample_entropy, s, TEST, TEST_LABELS),
            test_xi=stream(sample_entropy, s, TEST, TEST_XI),
            matched_moments=stream(seed, s, MOMENTS, MATCHED_LAW),
            input_moments=stream(seed, s, MOMENTS, INPUT_MOMENTS),
            train_rows=stream(sample_entropy, s, TRAIN, TRAIN_ROWS),
            test_rows=stream(sample_entropy, s, TEST, TEST_ROWS),
        )
