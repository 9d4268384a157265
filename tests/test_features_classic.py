"""Classic chunk family (seed 001): chunking rules, corpus chunk cap, faithful per-chunk values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from oracles.features_reference import classic_chunks_reference, mismatches

from soundclust_ray.audio import load_audio
from soundclust_ray.config import ClassicConfig
from soundclust_ray.features import dsp
from soundclust_ray.features.classic import (
    classic_chunk_cap,
    classic_columns,
    classic_track_from_chunks,
    compute_classic,
    compute_classic_chunks,
    count_chunks,
    split_chunks,
)

CFG = ClassicConfig()
SR = CFG.sample_rate
RTOL = 1e-4
"""float32 FFT + BLAS instead of librosa's numpy FFT + einsum: ~1e-6, rolloff bins rarely 1e-5."""
ATOL = 1e-6
EXACT = ("tempo_bpm",)
"""The tempo is an argmax over tempogram bins: it must agree exactly."""


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(5.0, 1), (7.49, 1), (7.5, 2), (10.0, 2), (2.4, 0), (2.5, 1), (30.0, 6)],
)
def test_count_chunks_pads_last_chunk_from_threshold(seconds, expected):
    assert count_chunks(int(round(seconds * SR)), CFG) == expected


def test_split_chunks_zero_pads_and_caps():
    y = np.arange(int(7.5 * SR), dtype=np.float32) + 1
    chunks = split_chunks(y, CFG)
    assert chunks.shape == (2, 5 * SR)
    np.testing.assert_array_equal(chunks.reshape(-1)[: y.size], y)
    assert not chunks.reshape(-1)[y.size :].any()
    capped = split_chunks(y, dataclasses.replace(CFG, max_chunks=1))
    np.testing.assert_array_equal(capped, chunks[:1])


def test_chunk_cap_uses_lower_quantile_of_durations():
    # 25 % quantile of 10, 20, 30, 40 s is 17.5 s: three full chunks + 2.5 s (>= 50 %) padded
    assert classic_chunk_cap([10.0, 20.0, 30.0, 40.0], CFG) == 4
    assert classic_chunk_cap([1.0, 1.0, 30.0], CFG) == 1
    assert classic_chunk_cap(np.array([12.0, np.nan]), CFG) == 2
    with pytest.raises(ValueError):
        classic_chunk_cap([], CFG)


def test_too_short_track_is_a_track_error():
    with pytest.raises(dsp.FeatureError, match="shorter"):
        compute_classic(np.ones(2 * SR, np.float32), SR, CFG)


@pytest.mark.parametrize("clip", ["blues.00001.wav", "disco.00000.wav"])
def test_chunks_match_seed_reference(shared_data, clip):
    y = load_audio(shared_data / "gtzan_mini" / clip, SR)[: int(12.6 * SR)]
    fast = compute_classic_chunks(y, SR, CFG)
    ref = classic_chunks_reference(y, SR)
    assert len(fast) == len(ref) == 3
    for i, (a, b) in enumerate(zip(fast, ref, strict=True)):
        assert list(a) == classic_columns(CFG)
        assert mismatches(a, b, RTOL, ATOL, exact=EXACT) == [], f"chunk {i}"


def test_track_vector_is_mean_of_chunks(shared_data):
    y = load_audio(shared_data / "gtzan_mini" / "jazz.00000.wav", SR)[: 11 * SR]
    rows = compute_classic_chunks(y, SR, CFG)
    track = compute_classic(y, SR, CFG)
    assert len(track) == 33
    assert track == classic_track_from_chunks(rows)
    for name in classic_columns(CFG):
        assert track[name] == pytest.approx(np.mean([r[name] for r in rows]), rel=1e-6, abs=1e-9)


def test_silent_chunks_give_finite_values_and_zero_tempo():
    rows = compute_classic_chunks(np.zeros(6 * SR, np.float32), SR, CFG)
    assert len(rows) == 1
    assert np.isfinite(list(rows[0].values())).all()
    assert rows[0]["classic__tempo_bpm"] == 0.0
