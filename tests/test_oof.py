"""Out-of-fold k-means reproduces seed 004's build_cluster_oof_features."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from soundclust_ray.analysis.oof import OofParams, fit_oof_kmeans
from soundclust_ray.config import RANDOM_STATE, MsdConfig


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Tiny k-means fits: OpenMP thread start-up dominates and crawls on a shared, loaded host."""
    with threadpool_limits(1):
        yield


def seed_params(k: int, **changes) -> OofParams:
    """Seed 004's parameters (MsdConfig defaults) with ``k`` clusters."""
    return replace(OofParams.for_msd(MsdConfig(), RANDOM_STATE), k=k, **changes)


def seed_build_cluster_oof_features(X_stats, k=32, n_splits=5):
    """Seed 004's function verbatim (its unused ``y`` replaced by the row count)."""
    n = len(X_stats)
    kf = KFold(n_splits=n_splits, shuffle=True, random_state=42)
    oof_dist = np.zeros((n, k))
    oof_label = np.zeros(n, dtype=int)
    for tr, va in kf.split(X_stats):
        scaler = StandardScaler().fit(X_stats[tr])
        Xz_tr = scaler.transform(X_stats[tr])
        Xz_va = scaler.transform(X_stats[va])
        km = MiniBatchKMeans(n_clusters=k, random_state=42, batch_size=2048, n_init="auto").fit(
            Xz_tr
        )
        oof_dist[va] = km.transform(Xz_va)
        oof_label[va] = km.predict(Xz_va)
    return oof_dist, oof_label


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6.0, size=(6, 30))
    return np.vstack([c + rng.normal(size=(60, 30)) for c in centers])


def test_reproduces_seed(blobs):
    dist, labels = fit_oof_kmeans(blobs, seed_params(8))
    ref_dist, ref_labels = seed_build_cluster_oof_features(blobs, k=8)
    assert dist.dtype == np.float32 and labels.dtype == np.int32
    assert dist.shape == (len(blobs), 8)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)


def test_label_is_nearest_centroid(blobs):
    dist, labels = fit_oof_kmeans(blobs, seed_params(6))
    np.testing.assert_array_equal(labels, dist.argmin(axis=1))


def test_full_kmeans_and_seed_change(blobs):
    a, _ = fit_oof_kmeans(blobs, seed_params(6, minibatch=False, n_init=2))
    b, _ = fit_oof_kmeans(blobs, seed_params(6, minibatch=False, n_init=2))
    c, _ = fit_oof_kmeans(blobs, seed_params(6, minibatch=False, n_init=2, random_state=7))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_too_few_rows():
    with pytest.raises(ValueError, match="n_splits=5"):
        fit_oof_kmeans(np.zeros((3, 4)), seed_params(2))


def test_k_larger_than_training_fold():
    with pytest.raises(ValueError, match="k=9"):
        fit_oof_kmeans(np.random.default_rng(0).normal(size=(10, 3)), seed_params(9))
    dist, _ = fit_oof_kmeans(np.random.default_rng(0).normal(size=(10, 3)), seed_params(8))
    assert dist.shape == (10, 8)
