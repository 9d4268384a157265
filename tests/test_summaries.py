"""Cluster names: distinctive tags (cluster mean above the corpus mean), not the most frequent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from soundclust_ray.analysis import summaries


def _corpus(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Two clusters; "rock" is the most probable tag in both, "jazz" and "rap" set them apart,
    "flat" is the same everywhere."""
    n = 40
    labels = np.repeat([0, 1], n // 2)
    rock = rng.uniform(0.7, 0.9, n)
    jazz = np.where(labels == 0, 0.5, 0.1) + rng.uniform(-0.05, 0.05, n)
    rap = np.where(labels == 1, 0.45, 0.05) + rng.uniform(-0.05, 0.05, n)
    tags = pd.DataFrame({"rock": rock, "jazz": jazz, "rap": rap, "flat": 0.3})
    X = rng.normal(size=(n, 3)).astype(np.float32) + labels[:, None] * 5
    meta = pd.DataFrame({"track_id": [f"t{i:02d}" for i in range(n)]})
    return X, labels, meta, tags


def test_clusters_are_named_by_what_sets_them_apart():
    X, labels, meta, tags = _corpus(np.random.default_rng(0))
    s = summaries.summarize_clusters(X, labels, meta, tags=tags, nearest=1, top=2)
    assert [e["top_tags"][0][0] for e in s] == ["rock", "rock"]  # frequent, not telling
    assert s[0]["distinctive_tags"][0]["tag"] == "jazz"
    assert s[1]["distinctive_tags"][0]["tag"] == "rap"
    assert s[0]["name"].startswith("jazz") and s[1]["name"].startswith("rap")
    assert all(t["tag"] != "flat" for e in s for t in e["distinctive_tags"])


def test_distinctive_entry_figures():
    X, labels, meta, tags = _corpus(np.random.default_rng(1))
    values, mean, std = summaries.tag_statistics(tags)
    top = summaries.distinctive_tags(values, mean, std, list(tags.columns), labels == 0, 5)
    jazz = top[0]
    assert jazz["tag"] == "jazz"
    assert jazz["mean"] == pytest.approx(tags["jazz"][labels == 0].mean())
    assert jazz["corpus_mean"] == pytest.approx(tags["jazz"].mean())
    assert jazz["z"] == pytest.approx(
        (jazz["mean"] - jazz["corpus_mean"]) / tags["jazz"].std(ddof=0)
    )
    assert jazz["lift"] == pytest.approx(jazz["mean"] / jazz["corpus_mean"])
    assert all(t["z"] > 0 for t in top)
    assert [t["z"] for t in top] == sorted((t["z"] for t in top), reverse=True)


def test_frequent_tags_without_excess_are_not_distinctive():
    X, labels, meta, tags = _corpus(np.random.default_rng(2))
    values, mean, std = summaries.tag_statistics(tags)
    top = summaries.distinctive_tags(values, mean, std, list(tags.columns), labels == 1, 5)
    assert top[0]["tag"] == "rap"
    assert "jazz" not in [t["tag"] for t in top]  # below the corpus mean in cluster 1


def test_no_tags_no_names_and_nan_tags_are_skipped():
    X, labels, meta, tags = _corpus(np.random.default_rng(3))
    plain = summaries.summarize_clusters(X, labels, meta, nearest=1)
    assert all("name" not in e and "distinctive_tags" not in e for e in plain)
    tags.loc[0, "jazz"] = np.nan
    s = summaries.summarize_clusters(X, labels, meta, tags=tags, nearest=1, top=1)
    assert s[0]["name"] == "jazz"
    empty = summaries.distinctive_tags(*summaries.tag_statistics(tags), list(tags), labels > 5, 3)
    assert empty == []


def test_numeric_mean_min_max_and_noise_listed_apart():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    labels = np.array([0, 0, 1, 1, -1, -1])
    meta = pd.DataFrame(
        {
            "track_id": list("abcdef"),
            "duration_sec": [30.0, 20.0, 5.0, np.nan, 1.0, 2.0],
            "sample_rate": pd.array([22050, 44100, 16000, None, 8000, 8000], dtype="Int64"),
        }
    )
    entries = summaries.summarize_clusters(X, labels, meta, nearest=1)
    clusters, noise = summaries.split_noise(entries)
    assert [e["cluster"] for e in clusters] == [0, 1] and noise["cluster"] == -1
    c0, c1 = clusters
    assert (c0["numeric_min"]["duration_sec"], c0["numeric_max"]["duration_sec"]) == (20.0, 30.0)
    assert c0["numeric_means"]["duration_sec"] == pytest.approx(25.0)
    assert (c1["numeric_min"]["duration_sec"], c1["numeric_max"]["duration_sec"]) == (5.0, 5.0)
    assert c1["numeric_max"]["sample_rate"] == 16000.0  # the missing value is left out
    assert noise["size"] == 2 and noise["numeric_max"]["duration_sec"] == 2.0
    assert "nearest_tracks" not in noise
    assert summaries.split_noise(clusters) == (clusters, None)
