"""The vectorized out-of-sample HDBSCAN assignment against hdbscan's own approximate_predict."""

from __future__ import annotations

import dataclasses

import hdbscan
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from soundclust_ray.analysis import clustering
from soundclust_ray.config import AnalysisConfig


@pytest.fixture(scope="module")
def fitted() -> tuple[hdbscan.HDBSCAN, np.ndarray]:
    X, _ = make_blobs(n_samples=5000, centers=8, n_features=8, cluster_std=2.0, random_state=3)
    X = X.astype(np.float32)
    model = hdbscan.HDBSCAN(min_cluster_size=4, min_samples=2, prediction_data=True)
    model.fit(X[:3000])
    return model, X[3000:]


def test_assignment_agrees_with_approximate_predict(fitted):
    model, Xq = fitted
    tree = clustering.hdbscan_tree(model, min_samples=2)
    labels, prob = clustering.assign_hdbscan(tree, Xq)
    ref_labels, ref_prob = hdbscan.approximate_predict(model, Xq)
    assert len(np.unique(ref_labels)) > 2
    assert np.mean(labels == ref_labels) >= 0.995
    same = labels == ref_labels
    np.testing.assert_allclose(prob[same], ref_prob[same], atol=1e-4)


def test_fit_hdbscan_sampled_labels_every_row_deterministically():
    X, _ = make_blobs(n_samples=3000, centers=5, n_features=6, cluster_std=1.0, random_state=1)
    X = X.astype(np.float32)
    cfg = dataclasses.replace(AnalysisConfig(), fit_sample=1000, predict_batch=700)
    labels, info = clustering.fit_hdbscan(X, cfg)
    again, _ = clustering.fit_hdbscan(X, cfg)
    assert info["out_of_sample_rows"] == 2000
    assert labels.shape == (3000,) and (labels >= 0).mean() > 0.9
    np.testing.assert_array_equal(labels, again)


def test_the_ivf_search_of_a_large_fit_assigns_as_the_exact_one(fitted):
    model, Xq = fitted
    tree = clustering.hdbscan_tree(model, 2)
    cfg = dataclasses.replace(AnalysisConfig(), hdbscan_ivf_above=1000)
    fast = clustering.with_search_index(tree, cfg)
    assert fast.search_index is not None and fast.search_nprobe == cfg.hdbscan_ivf_nprobe
    exact_labels, exact_prob = clustering.assign_hdbscan(tree, Xq)
    labels, prob = clustering.assign_hdbscan(fast, Xq)
    assert np.mean(labels == exact_labels) >= 0.995
    same = labels == exact_labels
    np.testing.assert_allclose(prob[same], exact_prob[same], atol=1e-4)
    again, _ = clustering.assign_hdbscan(clustering.with_search_index(tree, cfg), Xq)
    np.testing.assert_array_equal(labels, again)
    small = dataclasses.replace(cfg, hdbscan_ivf_above=len(tree.points) + 1)
    assert clustering.with_search_index(tree, small) is tree
