"""Seed 000's embedding sanity counts and centering + L2 normalization."""

from __future__ import annotations

import numpy as np
import pytest

from soundclust_ray.embed.postprocess import center_and_normalize, embedding_sanity, sanity_report


def cone(n: int = 400, d: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors in a narrow cone around one direction, like raw CLAP embeddings."""
    rng = np.random.default_rng(seed)
    x = 4.0 * np.ones(d) + rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_counts_bad_rows_and_skips_them_for_cosine():
    X = cone(50)
    X[0, 3] = np.nan
    X[1, 0] = np.inf
    X[2] = 0.0
    s = embedding_sanity(X)
    assert (s["n_samples"], s["n_dims"]) == (50, 32)
    assert (s["n_nan"], s["n_inf"], s["n_zero_norm"], s["cosine_rows"]) == (1, 1, 1, 47)
    assert np.isfinite(s["mean_pairwise_cosine"]) and s["mean_pairwise_cosine"] > 0.8


def test_pairwise_cosine_matches_brute_force():
    X = np.random.default_rng(1).standard_normal((30, 5)).astype(np.float32)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    pairs = [float(U[i] @ U[j]) for i in range(30) for j in range(i + 1, 30)]
    s = embedding_sanity(X)
    assert s["mean_pairwise_cosine"] == pytest.approx(np.mean(pairs), abs=1e-6)
    assert s["std_pairwise_cosine"] == pytest.approx(np.std(pairs), abs=1e-6)


def test_centering_breaks_the_cone():
    report = sanity_report(cone())
    assert report["raw"]["mean_pairwise_cosine"] > 0.9
    assert abs(report["centered_normalized"]["mean_pairwise_cosine"]) < 0.02
    Y = center_and_normalize(cone())
    assert Y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(Y.mean(axis=0), 0.0, atol=0.05)


def test_zero_rows_stay_zero_and_sampling_is_seeded():
    same = center_and_normalize(np.ones((3, 4), np.float32))
    assert (same == 0).all()
    big = cone(300)
    a = embedding_sanity(big, max_rows=50, random_state=7)
    b = embedding_sanity(big, max_rows=50, random_state=7)
    assert a == b and a["cosine_rows"] == 50
    with pytest.raises(ValueError, match="matrix"):
        embedding_sanity(np.ones(3))
