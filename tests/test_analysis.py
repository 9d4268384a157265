"""The pure pieces of the driver analysis: gather, scaling, clustering, projections, metrics,
summaries. Shards are written with shards.py into temporary OUT folders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from helpers import config_with
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from soundclust_ray import shards
from soundclust_ray.analysis import clustering, gather, metrics, projection, scaling, summaries
from soundclust_ray.config import AnalysisConfig

CFG = AnalysisConfig()


def write_features(out, parts: list[dict[str, np.ndarray]]) -> None:
    fs, base = shards.resolve(str(out))
    for cols in parts:
        table = pa.table({k: pa.array(v) for k, v in cols.items()})
        shards.write_table_atomic(fs, shards.new_shard_path(base, "features"), table)


def blobs(n_per=20, centers=3, d=6, seed=0, spread=8.0):
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=spread, size=(centers, d))
    X = np.vstack([ci + rng.normal(size=(n_per, d)) for ci in c]).astype(np.float32)
    y = np.repeat(np.arange(centers), n_per)
    return X, y


# --- gather -------------------------------------------------------------------------------


def test_gather_features_sorts_dedupes_and_intersects_columns(tmp_path):
    ids_a = np.array(["b", "d", "a"], dtype=object)
    ids_b = np.array(["c", "a"], dtype=object)  # "a" again: the first shard's copy wins
    write_features(
        tmp_path,
        [
            {
                "track_id": ids_a,
                "timbre__x": np.array([2, 4, 1], np.float32),
                "timbre__y": np.array([20, 40, 10], np.float32),
                "classic__z": np.array([0, 0, 0], np.float32),
            },
            {
                "track_id": ids_b,
                "timbre__x": np.array([3, 99], np.float32),
                "timbre__y": np.array([30, 99], np.float32),
            },
        ],
    )
    g = gather.gather_features(str(tmp_path))
    first_is_a = shards.list_shards(str(tmp_path), "features")[0]
    assert list(g.track_ids) == ["a", "b", "c", "d"]
    assert g.columns == ["timbre__x", "timbre__y"]
    assert g.X.dtype == np.float32 and g.X.shape == (4, 2)
    # "a" comes from whichever shard is listed first; its values are that shard's.
    fs, _ = shards.resolve(str(tmp_path))
    import pyarrow.parquet as pq

    first_ids = pq.read_table(first_is_a, filesystem=fs).column("track_id").to_pylist()
    expected_a = [1, 10] if "b" in first_ids else [99, 99]
    np.testing.assert_array_equal(g.X[0], expected_a)
    np.testing.assert_array_equal(g.X[1:], [[2, 20], [3, 30], [4, 40]])
    assert g.notes and "dropped" in g.notes[0]
    assert not g.chunk_level


def test_gather_features_prefix_and_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        gather.gather_features(str(tmp_path))
    write_features(
        tmp_path, [{"track_id": np.array(["x"], object), "a__v": np.ones(1, np.float32)}]
    )
    with pytest.raises(ValueError, match="no numeric feature columns"):
        gather.gather_features(str(tmp_path), prefixes=("zzz__",))


def write_embeddings(out, backend, ids, X, windows=None, tags=None, parts=2):
    fs, base = shards.resolve(str(out))
    for idx in np.array_split(np.arange(len(ids)), parts):
        cols = {"track_id": pa.array(np.asarray(ids, object)[idx])}
        if windows is not None:
            cols["window_index"] = pa.array(np.asarray(windows, np.int32)[idx])
        cols["embedding"] = shards.embedding_array(X[idx])
        for name, values in (tags or {}).items():
            cols[f"tag__{name}"] = pa.array(np.asarray(values, np.float32)[idx])
        shards.write_table_atomic(
            fs, shards.new_shard_path(base, f"embeddings/{backend}"), pa.table(cols)
        )


def test_gather_embeddings_chunk_level_with_tags(tmp_path):
    ids = ["t2", "t1", "t1", "t2", "t1"]
    win = [1, 2, 0, 0, 1]
    X = np.arange(10, dtype=np.float32).reshape(5, 2)
    write_embeddings(tmp_path, "clap", ids, X, win, tags={"rock": [0.1, 0.2, 0.3, 0.4, 0.5]})
    assert gather.embedding_backends(str(tmp_path)) == ["clap"]
    g = gather.gather_embeddings(str(tmp_path), "clap")
    assert g.chunk_level
    assert list(zip(g.track_ids, g.window_index, strict=True)) == [
        ("t1", 0),
        ("t1", 1),
        ("t1", 2),
        ("t2", 0),
        ("t2", 1),
    ]
    np.testing.assert_array_equal(g.X[:, 0], [4, 8, 2, 6, 0])
    np.testing.assert_allclose(g.tags["rock"], [0.3, 0.5, 0.2, 0.4, 0.1], rtol=1e-6)
    pooled = gather.pool_windows(g)
    assert list(pooled.track_ids) == ["t1", "t2"]
    np.testing.assert_allclose(pooled.X[:, 0], [(4 + 8 + 2) / 3, 3])
    np.testing.assert_allclose(pooled.tags["rock"], [(0.3 + 0.5 + 0.2) / 3, 0.25], rtol=1e-6)


def test_join_on_tracks_keeps_common_rows():
    a = gather.Gathered(
        np.array(["a", "b", "c"], object), np.eye(3, dtype=np.float32), ["f__1", "f__2", "f__3"]
    )
    b = gather.Gathered(
        np.array(["b", "c", "d"], object), np.ones((3, 1), np.float32) * [[1], [2], [3]], ["e__0"]
    )
    j = gather.join_on_tracks(a, b)
    assert list(j.track_ids) == ["b", "c"]
    np.testing.assert_array_equal(j.X, [[0, 1, 0, 1], [0, 0, 1, 2]])
    assert "dropped" in j.notes[-1]


# --- scaling ------------------------------------------------------------------------------


def test_standardize_matches_sklearn_and_imputes_nonfinite():
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(301, 5)) * [1, 10, 100, 0, 3] + [5, -2, 0, 7, 1]).astype(np.float32)
    expected = StandardScaler().fit_transform(X.astype(np.float64))
    Y = X.copy()
    info = scaling.standardize_inplace(Y, block_rows=64)
    np.testing.assert_allclose(Y, expected, atol=1e-4)
    assert info["n_nonfinite"] == 0
    Z = X.copy()
    Z[3, 1] = np.nan
    Z[7, 2] = np.inf
    info = scaling.standardize_inplace(Z, block_rows=64)
    assert info["n_nonfinite"] == 2
    assert Z[3, 1] == 0 and Z[7, 2] == 0 and np.isfinite(Z).all()


def test_weights_parse_and_apply():
    assert scaling.parse_weights("timbre=1, classic=0.5") == (("timbre", 1.0), ("classic", 0.5))
    assert scaling.parse_weights("") == ()
    for bad in ("timbre", "timbre=x", "=2", "timbre=-1"):
        with pytest.raises(ValueError, match="bad weight"):
            scaling.parse_weights(bad)
    X = np.ones((2, 3), np.float32)
    used = scaling.apply_family_weights(X, ["a__1", "a__2", "b__1"], {"b": 0.5})
    assert used == {"a": 1.0, "b": 0.5}
    np.testing.assert_array_equal(X, [[1, 1, 0.5], [1, 1, 0.5]])
    with pytest.raises(ValueError, match="unknown families"):
        scaling.apply_family_weights(X, ["a__1"], {"zz": 2})


def test_postprocess_embeddings_reports_before_and_after():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(50, 16)) + 5).astype(np.float32)  # a narrow cone
    Y, sanity = scaling.postprocess_embeddings(X)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1, atol=1e-5)
    assert sanity["before"]["mean_pairwise_cosine"] > 0.9
    assert abs(sanity["after"]["mean_pairwise_cosine"]) < 0.1


# --- clustering ---------------------------------------------------------------------------


def test_fit_kmeans_full_and_minibatch_recover_blobs():
    X, y = blobs()
    labels, centres = clustering.fit_kmeans(X, 3, CFG)
    assert labels.dtype == np.int32 and centres.shape == (3, X.shape[1])
    assert adjusted_rand_score(y, labels) == 1.0
    labels_mb, _ = clustering.fit_kmeans(X, 3, config_with(minibatch_above=10))
    assert adjusted_rand_score(y, labels_mb) > 0.9
    with pytest.raises(ValueError):
        clustering.fit_kmeans(X[:2], 3, CFG)


def test_select_k_finds_blob_count():
    X, _ = blobs(n_per=15, centers=4)
    best, curve = clustering.select_k(
        X, config_with(k_auto_range=(2, 7), silhouette_sample=1000, kmeans_n_init=3)
    )
    assert best == 4
    assert [c["k"] for c in curve] == [2, 3, 4, 5, 6, 7]
    best3, curve3 = clustering.select_k(X[:5], config_with(k_auto_range=(2, 16), kmeans_n_init=2))
    assert [c["k"] for c in curve3] == [2, 3, 4]
    with pytest.raises(ValueError):
        clustering.select_k(X[:2], CFG)


def test_fit_hdbscan_full_and_sampled():
    X, y = blobs(n_per=60, centers=3)
    labels, info = clustering.fit_hdbscan(X, CFG)
    assert "out_of_sample_rows" not in info
    assert adjusted_rand_score(y[labels >= 0], labels[labels >= 0]) == 1.0
    sampled, info = clustering.fit_hdbscan(X, config_with(fit_sample=90, predict_batch=25))
    assert info["fitted_rows"] == 90 and info["out_of_sample_rows"] == 90
    ok = sampled >= 0
    assert ok.mean() > 0.8
    assert adjusted_rand_score(y[ok], sampled[ok]) == 1.0
    tiny, info = clustering.fit_hdbscan(X[:3], CFG)
    assert (tiny == -1).all() and "skipped" in info


def test_vote_windows_majority_ties_and_noise():
    ids = np.array(["a", "a", "a", "b", "b", "c", "c"], object)
    labels = np.array([2, 2, 1, 0, 1, -1, -1])
    tracks, voted = clustering.vote_windows(ids, labels)
    assert list(tracks) == ["a", "b", "c"]
    assert list(voted) == [2, 0, -1]  # tie 0/1 → 0; all-noise → -1
    _, v = clustering.vote_windows(np.array(["d", "d", "d"], object), np.array([-1, -1, 3]))
    assert list(v) == [3]


def test_seeded_sample_is_deterministic():
    a = clustering.seeded_sample(1000, 10, 42)
    assert np.array_equal(a, clustering.seeded_sample(1000, 10, 42))
    assert len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
    assert np.array_equal(clustering.seeded_sample(5, 10, 42), np.arange(5))


# --- projections --------------------------------------------------------------------------


def test_pca_reduction_int_and_fraction():
    X, _ = blobs(d=10)
    Y, info = projection.fit_pca_reduction(X, 3, CFG)
    assert Y.shape == (60, 3) and Y.dtype == np.float32 and info["n_components"] == 3
    Y, info = projection.fit_pca_reduction(X, 0.9, CFG)
    assert info["explained_variance"] >= 0.9 and Y.shape[1] == info["n_components"]
    Ys, _ = projection.fit_pca_reduction(X, 3, config_with(fit_sample=30, predict_batch=7))
    assert Ys.shape == (60, 3)
    with pytest.raises(ValueError):
        projection.fit_pca_reduction(X, 0, CFG)


def test_pca_2d_and_umap_guard():
    X, _ = blobs()
    Y, info = projection.fit_pca_2d(X, CFG)
    assert Y.shape == (60, 2) and len(info["explained_variance_ratio"]) == 2
    Y1, _ = projection.fit_pca_2d(X[:, :1], CFG)
    assert Y1.shape == (60, 2) and (Y1[:, 1] == 0).all()
    with pytest.raises(ValueError):
        projection.fit_pca_2d(X[:1], CFG)
    with pytest.raises(ValueError, match="at least 3 rows"):
        projection.fit_umap_2d(X[:2], CFG)


# --- metrics ------------------------------------------------------------------------------


def test_internal_metrics_values_and_reasons():
    X, y = blobs()
    m = metrics.internal_metrics(X, y, CFG)
    assert 0.5 < m["silhouette"] <= 1 and m["davies_bouldin"] > 0 and m["calinski_harabasz"] > 0
    one = metrics.internal_metrics(X, np.zeros(len(X), int), CFG)
    assert one["silhouette"] is None and "reason" in one
    noisy = y.copy()
    noisy[:5] = -1
    m2 = metrics.internal_metrics(X, noisy, CFG, ignore_noise=True)
    assert m2["n_clusters"] == 3 and m2["silhouette"] is not None
    sampled = metrics.internal_metrics(X, y, config_with(silhouette_sample=20))
    assert sampled["silhouette_rows"] == 20


def test_label_metrics_and_contingency():
    true = ["rock", "rock", "jazz", "jazz", None, ""]
    pred = [1, 1, 0, 0, 0, 1]
    m = metrics.label_metrics(true, pred)
    assert m["nmi"] == pytest.approx(1) and m["ari"] == pytest.approx(1)
    assert m["n_labelled"] == 4 and m["n_unlabelled"] == 2
    assert m["contingency"] == {
        "labels": ["jazz", "rock"],
        "clusters": ["0", "1"],
        "counts": [[2, 0], [0, 2]],
    }
    wrong = metrics.label_metrics(["a", "b", "a", "b"], [0, 0, 1, 1])
    assert wrong["ari"] < 0.1
    assert metrics.label_metrics(["a"], [0])["nmi"] is None


def test_cluster_sizes_and_json_safe():
    assert metrics.cluster_sizes(np.array([1, -1, 1, 0])) == {"-1": 1, "0": 1, "1": 2}
    safe = metrics.json_safe(
        {"a": np.float32(np.nan), "b": [np.int64(2), np.inf], 3: np.bool_(True)}
    )
    assert safe == {"a": None, "b": [2, None], "3": True}


# --- summaries ----------------------------------------------------------------------------


def test_summaries_sizes_means_top_values_nearest_and_tags():
    X = np.array([[0, 0], [1, 0], [10, 10], [0.2, 0], [11, 10], [50, 50]], np.float32)
    labels = np.array([0, 0, 1, 0, 1, -1])
    meta = pd.DataFrame(
        {
            "track_id": ["a", "b", "c", "d", "e", "f"],
            "path": ["p"] * 6,
            "year": [2000, 2002, 1990, 2004, 1992, 1900],
            "genre": ["rock", "rock", "jazz", "pop", "jazz", "x"],
        }
    )
    tags = pd.DataFrame(
        {"loud": [0.9, 0.8, 0.1, 0.7, 0.2, 0.5], "calm": [0.1, 0.2, 0.9, 0.1, 0.8, 0.5]}
    )
    s = summaries.summarize_clusters(X, labels, meta, tags=tags, nearest=2, top=1)
    assert [e["cluster"] for e in s] == [0, 1, -1]
    c0 = s[0]
    assert c0["size"] == 3
    assert c0["numeric_means"]["year"] == pytest.approx(2002)
    assert c0["top_values"]["genre"] == [["rock", 2]]
    assert "path" not in c0["top_values"]
    # centre of cluster 0 is (0.4, 0): d (0.2) then a (0.4)
    assert [t["track_id"] for t in c0["nearest_tracks"]] == ["d", "a"]
    assert c0["top_tags"][0][0] == "loud"
    assert s[1]["top_tags"][0][0] == "calm"
    assert "nearest_tracks" not in s[2]
    given = summaries.summarize_clusters(
        X,
        labels,
        meta,
        centres={0: np.array([1, 0], np.float32), 1: np.array([11, 10], np.float32)},
        nearest=1,
    )
    assert given[0]["nearest_tracks"][0]["track_id"] == "b"
    assert given[1]["nearest_tracks"][0]["track_id"] == "e"


def test_dispersion_scores_are_sklearns_without_copying_the_rows():
    from sklearn import metrics as skm
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=3000, centers=5, n_features=12, random_state=3)
    X = X.astype(np.float32)
    for rows in (np.arange(len(y)), np.flatnonzero(y != 2)):
        db, ch = metrics.dispersion_scores(X, rows, y[rows])
        assert db == pytest.approx(skm.davies_bouldin_score(X[rows], y[rows]), rel=1e-6)
        assert ch == pytest.approx(skm.calinski_harabasz_score(X[rows], y[rows]), rel=1e-6)
