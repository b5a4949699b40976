"""The random streams of one seed index (docs/model.md §3.3).

fastsgd/streams.py: every stream is the child of ``SeedSequence(entropy)`` at its spawn key,
i.e. the Generator that ``SeedSequence(entropy).spawn`` gives at that position; the keys are
those of the table in §3.3, (s,0) … (s,3) for the problem and (s,4,0) … (s,5,3) for the data;
and ``sample_entropy`` (``sample_seed``, else ``seed``) feeds the data streams (s,4,·), (s,5,·)
only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastsgd import streams as st
from fastsgd.streams import SeedStreams, stream

SEED = 20240611

#: The §3.3 table: SeedStreams field → spawn key after the seed index s, and whether its
#: entropy is sample_entropy (a data stream) or seed.
TABLE = {
    "features": ((0,), False),
    "teacher": ((1,), False),
    "mixture": ((2,), False),
    "student": ((3,), False),
    "train_latent": ((4, 0), True),
    "train_labels": ((4, 1), True),
    "train_noise": ((4, 2), True),
    "train_xi": ((4, 3), True),
    "test_latent": ((5, 0), True),
    "test_labels": ((5, 1), True),
    "test_xi": ((5, 2), True),
    "matched_moments": ((6, 0), False),
    "input_moments": ((6, 1), False),
    "train_rows": ((4, 4), True),     # data latents (§11.1), appended
    "test_rows": ((5, 3), True),
}


def spawned(entropy: int, key: tuple[int, ...]) -> np.random.Generator:
    """The Generator at ``key`` reached by repeated ``SeedSequence.spawn`` from the root."""
    node = np.random.SeedSequence(entropy)
    for position in key:
        node = node.spawn(position + 1)[position]
    return np.random.Generator(np.random.PCG64(node))


def same_stream(a: np.random.Generator, b: np.random.Generator) -> bool:
    return a.bit_generator.state == b.bit_generator.state


def test_every_field_of_the_table_and_nothing_else():
    assert [f.name for f in dataclasses.fields(SeedStreams)] == list(TABLE)
    assert (st.FEATURES, st.TEACHER, st.MIXTURE, st.STUDENT, st.TRAIN, st.TEST,
            st.MOMENTS) == tuple(range(7))
    assert (st.MATCHED_LAW, st.INPUT_MOMENTS) == (0, 1)
    assert (st.LATENT, st.LABELS, st.NOISE, st.XI, st.TRAIN_ROWS) == tuple(range(5))
    assert (st.TEST_LATENT, st.TEST_LABELS, st.TEST_XI, st.TEST_ROWS) == tuple(range(4))


@pytest.mark.parametrize("s", [0, 3, 17])
@pytest.mark.parametrize("field", list(TABLE))
def test_stream_is_the_spawned_child_at_its_key(s, field):
    key, _ = TABLE[field]
    expected = spawned(SEED, (s, *key))
    got = stream(SEED, s, *key)
    assert same_stream(got, expected)
    np.testing.assert_array_equal(got.standard_normal(5), expected.standard_normal(5))


@pytest.mark.parametrize("s", [0, 5])
def test_seed_streams_use_the_keys_of_the_table(s):
    sample_entropy = SEED + 101
    streams = SeedStreams.for_seed(SEED, sample_entropy, s)
    for field, (key, data) in TABLE.items():
        entropy = sample_entropy if data else SEED
        assert same_stream(getattr(streams, field), spawned(entropy, (s, *key))), field


def test_sample_entropy_feeds_only_the_data_streams():
    s = 2
    own = SeedStreams.for_seed(SEED, SEED, s)           # sample_seed unset: sample_entropy = seed
    other = SeedStreams.for_seed(SEED, SEED + 1, s)     # another sample_seed
    for field, (_, data) in TABLE.items():
        assert same_stream(getattr(own, field), getattr(other, field)) == (not data), field
    # and the seed itself moves every stream
    moved = SeedStreams.for_seed(SEED + 1, SEED, s)
    for field, (_, data) in TABLE.items():
        assert same_stream(getattr(own, field), getattr(moved, field)) == data, field


def test_streams_of_different_seed_indices_and_purposes_are_distinct():
    states = {}
    for s in range(3):
        streams = SeedStreams.for_seed(SEED, SEED, s)
        for field in TABLE:
            draw = tuple(getattr(streams, field).integers(0, 2 ** 63, size=2))
            assert draw not in states, (s, field, states.get(draw))
            states[draw] = (s, field)
