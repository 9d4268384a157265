"""RayExecutor gives the serial path's results (k selection, OOF folds, HDBSCAN assignment)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from soundclust_ray.analysis import clustering
from soundclust_ray.analysis.oof import OofParams, fit_oof_kmeans
from soundclust_ray.config import AnalysisConfig

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def executor(ray_local):
    """On the session's Ray: shutting it down here would make a later in-thread run start
    Ray's daemons from that thread, and Linux kills them (parent-death signal) when it ends."""
    from soundclust_ray.ray_executor import RayExecutor

    return RayExecutor()


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    X, _ = make_blobs(n_samples=2400, centers=4, n_features=6, cluster_std=1.0, random_state=2)
    return X.astype(np.float32)


def test_ray_matches_serial(executor, X):
    cfg = dataclasses.replace(
        AnalysisConfig(), fit_sample=800, predict_batch=600, k_auto_range=(2, 5)
    )
    (k, curve), (k_ref, curve_ref) = (
        clustering.select_k(X, cfg, executor),
        clustering.select_k(X, cfg),
    )
    assert k == k_ref and [c["k"] for c in curve] == [c["k"] for c in curve_ref]
    for key in ("silhouette", "inertia"):
        # float32 sums in tasks (Ray gives a task one BLAS thread) differ in the last bits only
        np.testing.assert_allclose([c[key] for c in curve], [c[key] for c in curve_ref], rtol=1e-5)
    p = OofParams.for_analysis(cfg, 4)
    for got, ref in zip(fit_oof_kmeans(X, p, executor), fit_oof_kmeans(X, p), strict=True):
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(
        clustering.fit_hdbscan(X, cfg, executor=executor)[0], clustering.fit_hdbscan(X, cfg)[0]
    )


def test_a_run_spreads_only_a_large_analysis_over_ray(executor):
    from soundclust_ray.config import RAY_ANALYSIS_MIN_ROWS
    from soundclust_ray.ray_executor import RayExecutor, analysis_executor

    assert isinstance(analysis_executor(RAY_ANALYSIS_MIN_ROWS), RayExecutor)
    assert analysis_executor(RAY_ANALYSIS_MIN_ROWS - 1) is clustering.SERIAL
