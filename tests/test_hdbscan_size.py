"""HDBSCAN's min_cluster_size grows with the corpus; useless labels carry a warning."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from soundclust_ray.analysis import clustering
from soundclust_ray.config import AnalysisConfig

SEED = replace(AnalysisConfig(), hdbscan_scale_min_cluster_size=False)
"""Seed 002's min_cluster_size 4 as given, as an explicit --min-cluster-size 4 sets it."""


def genres_of_albums(n_genres=5, albums=60, per_album=8, d=8, seed=0):
    """Genres made of many tight albums, the structure of many short clips of few records:
    (rows, genre of each row)."""
    rng = np.random.default_rng(seed)
    rows, genre = [], []
    for g in range(n_genres):
        centre = rng.normal(0, 12, d)
        for _ in range(albums):
            album = centre + rng.normal(0, 2.0, d)
            rows.append(album + rng.normal(0, 0.25, (per_album, d)))
            genre += [g] * per_album
    return np.vstack(rows).astype(np.float32), np.array(genre)


@pytest.mark.parametrize(
    ("rows", "expected"), [(8, 4), (13, 4), (324, 4), (325, 5), (2400, 12), (50_000, 56)]
)
def test_min_cluster_size_scales_with_the_rows(rows, expected):
    assert clustering.hdbscan_min_cluster_size(rows, AnalysisConfig()) == expected
    assert clustering.hdbscan_min_cluster_size(rows, SEED) == 4


def test_a_large_corpus_is_not_cut_into_hundreds_of_clusters():
    from sklearn.metrics import normalized_mutual_info_score

    X, genre = genres_of_albums()
    seed_labels, seed_info = clustering.fit_hdbscan(X, SEED)
    labels, info = clustering.fit_hdbscan(X, AnalysisConfig())
    assert len(set(seed_labels[seed_labels >= 0])) >= 100  # one cluster per album
    assert (seed_info["min_cluster_size"], info["min_cluster_size"]) == (4, 12)
    assert len(set(labels[labels >= 0])) == 5
    assert normalized_mutual_info_score(genre, labels) > 0.95
    assert info["min_cluster_size_rule"] == "max(4, round(0.25 x sqrt(2400 rows)))"
    assert "warning" not in info and "min_cluster_size_rule" not in seed_info


def test_a_small_corpus_keeps_the_seed_value():
    X, _ = genres_of_albums(albums=2, per_album=4)  # 40 rows
    scaled, info = clustering.fit_hdbscan(X, AnalysisConfig())
    seed, _ = clustering.fit_hdbscan(X, SEED)
    assert info["min_cluster_size"] == 4 and np.array_equal(scaled, seed)


def test_all_noise_says_so():
    X = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    labels, info = clustering.fit_hdbscan(X, AnalysisConfig())
    assert (labels < 0).all()
    assert info["warning"] == (
        "HDBSCAN found 0 clusters, 100% of 8 rows noise (min_cluster_size 4): no density "
        "clusters at this corpus size; use the k-means labels, or try another --min-cluster-size"
    )
    _, info = clustering.fit_hdbscan(X[:3], AnalysisConfig())  # fewer rows than the size
    assert "skipped" in info and "100% of 3 rows noise" in info["warning"]


def test_one_cluster_or_mostly_noise_warns():
    one = np.array([0] * 50 + [-1] * 5)
    assert "found 1 cluster, 9% of 55 rows noise" in clustering.hdbscan_warning(one, 4)
    mostly_noise = np.array([0] * 5 + [1] * 5 + [-1] * 90)
    assert "2 clusters, 90% of 100 rows noise" in clustering.hdbscan_warning(mostly_noise, 4)
    assert clustering.hdbscan_warning(np.array([0] * 5 + [1] * 5 + [-1] * 89), 4) is None


def test_an_explicit_min_cluster_size_is_used_as_given():
    from soundclust_ray.cli import analysis_config, build_parser

    default = analysis_config(build_parser().parse_args(["analyze", "o"]))
    assert default.hdbscan_scale_min_cluster_size is True
    typed = analysis_config(build_parser().parse_args(["analyze", "o", "--min-cluster-size", "4"]))
    assert typed.hdbscan_scale_min_cluster_size is False and typed.hdbscan_min_cluster_size == 4
    X, _ = genres_of_albums()
    assert np.array_equal(clustering.fit_hdbscan(X, typed)[0], clustering.fit_hdbscan(X, SEED)[0])


def test_the_warning_reaches_the_metrics(tmp_path):
    """analyze() on 9 tracks: HDBSCAN's warning is in metrics.json's hdbscan record."""
    import json

    from helpers import config_with
    from test_analysis_driver import make_out

    from soundclust_ray.analysis.driver import analyze

    make_out(tmp_path, n_per=3)
    cfg = config_with(k=3, umap=False, report=False, oof=False, duplicates=False)
    metrics = analyze(str(tmp_path), cfg, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["hdbscan"]["warning"] == metrics["hdbscan"]["warning"]
    assert "rows noise (min_cluster_size 4)" in saved["hdbscan"]["warning"]
