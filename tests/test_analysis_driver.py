"""analyze() end to end on small OUT folders written with shards.py (no Ray, no audio)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from helpers import config_with

from soundclust_ray import shards
from soundclust_ray.analysis.driver import analyze
from soundclust_ray.config import AnalysisConfig

GENRES = ("blues", "jazz", "metal")


def make_out(out, n_per=8, d=12, seed=0, errors=0, run_timings=None, features=True):
    """Manifest + feature shards of well separated genres (+ errors.parquet, run.json)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(len(GENRES), d))
    ids, genre, rows = [], [], []
    for g, c in zip(GENRES, centres, strict=True):
        for i in range(n_per):
            ids.append(f"{g}/{g}.{i:05d}.wav")
            genre.append(g)
            rows.append(c + rng.normal(size=d))
    X = np.asarray(rows, np.float32)
    fs, base = shards.resolve(str(out))
    n = len(ids)
    manifest = pd.DataFrame(
        {
            "track_id": ids + [f"bad/{i}.mp3" for i in range(errors)],
            "path": [f"/data/{t}" for t in ids] + [f"/data/bad/{i}.mp3" for i in range(errors)],
            "genre": genre + ["?"] * errors,
            "year": np.arange(n + errors) + 1990,
            "title": ["<script>alert(1)</script>"] + [f"song {i}" for i in range(1, n + errors)],
        }
    )
    shards.write_table_atomic(
        fs, f"{base}/manifest.parquet", pa.Table.from_pandas(manifest, preserve_index=False)
    )
    if features and n:
        order = rng.permutation(n)
        for part in np.array_split(order, 2):
            cols = {"track_id": pa.array([ids[i] for i in part])}
            for j in range(d):
                fam = "timbre" if j < d // 2 else "classic"
                cols[f"{fam}__f{j:02d}"] = pa.array(X[part, j])
            shards.write_table_atomic(fs, shards.new_shard_path(base, "features"), pa.table(cols))
    if errors:
        err = pa.table(
            {
                "track_id": [f"bad/{i}.mp3" for i in range(errors)],
                "path": [f"/data/bad/{i}.mp3" for i in range(errors)],
                "stage": ["decode"] * errors,
                "error_type": ["DecodeError"] * errors,
                "message": ["cannot decode <b>file</b>"] * errors,
            }
        )
        shards.write_table_atomic(fs, f"{base}/errors.parquet", err)
    if run_timings is not None:
        with open(f"{base}/run.json", "w") as f:
            json.dump({"timings": run_timings, "config": {"x": 1}}, f)
    return ids, genre, X


@pytest.fixture(scope="module")
def features_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("features_run")
    ids, genre, _ = make_out(out, errors=2, run_timings={"pipeline": 12.5, "manifest": 0.1})
    m = analyze(str(out), config_with(k=3), label_col="genre", progress=False)
    return out, ids, genre, m


def test_outputs_and_metrics(features_run):
    out, ids, genre, m = features_run
    for name in (
        "clusters.parquet",
        "oof.parquet",
        "metrics.json",
        "cluster_summaries.json",
        "report.html",
    ):
        assert (out / name).exists(), name
    assert json.loads((out / "metrics.json").read_text()) == m
    assert m["n_tracks"] == 24 and m["n_failed"] == 2 and m["k"] == 3
    assert m["nmi"] == pytest.approx(1) and m["ari"] == pytest.approx(1)
    assert m["homogeneity"] == pytest.approx(1) and m["completeness"] == pytest.approx(1)
    assert sorted(m["contingency"]["labels"]) == sorted(GENRES)
    assert m["silhouette"] > 0.5 and m["davies_bouldin"] > 0 and m["calinski_harabasz"] > 0
    assert sum(m["cluster_sizes"]["kmeans"].values()) == 24
    assert 0 <= m["noise_fraction"] <= 1
    stages = m["seconds_per_stage"]
    assert stages["pipeline"] == 12.5 and {"gather", "kmeans", "hdbscan", "umap"} <= set(stages)
    assert m["matrix"]["matrix"] == "features" and m["matrix"]["scaling"] == "standard"
    assert "report_error" not in m


def test_clusters_table(features_run):
    out, ids, genre, _ = features_run
    df = pd.read_parquet(out / "clusters.parquet")
    assert list(df["track_id"]) == sorted(ids)
    for col in (
        "path",
        "genre",
        "year",
        "title",
        "kmeans",
        "hdbscan",
        "umap_x",
        "umap_y",
        "pca_x",
        "pca_y",
    ):
        assert col in df, col
    assert df["kmeans"].dtype == np.int32 and np.isfinite(df[["umap_x", "pca_x"]]).all().all()
    assert (df.groupby("genre")["kmeans"].nunique() == 1).all()
    oof = pd.read_parquet(out / "oof.parquet")
    assert list(oof.columns) == ["track_id", "dist_00", "dist_01", "dist_02", "label"]
    assert len(oof) == 24 and (oof[["dist_00", "dist_01", "dist_02"]] >= 0).all().all()


def test_summaries_file(features_run):
    out, *_ = features_run
    s = json.loads((out / "cluster_summaries.json").read_text())
    km = s["kmeans"]
    assert sorted(e["size"] for e in km) == [8, 8, 8]
    for e in km:
        assert len(e["nearest_tracks"]) == 5
        genres = {t["track_id"].split("/")[0] for t in e["nearest_tracks"]}
        assert len(genres) == 1 and e["top_values"]["genre"][0] == [genres.pop(), 8]
        assert "year" in e["numeric_means"]


def test_deterministic(tmp_path, features_run):
    out, *_ = features_run
    make_out(tmp_path, errors=2, run_timings={"pipeline": 12.5, "manifest": 0.1})
    analyze(str(tmp_path), config_with(k=3), label_col="genre", progress=False)
    a = pd.read_parquet(out / "clusters.parquet")
    b = pd.read_parquet(tmp_path / "clusters.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_missing_label_column_is_a_clear_error(features_run):
    out, *_ = features_run
    with pytest.raises(ValueError, match="label column 'mood' is not in the manifest.*genre"):
        analyze(str(out), label_col="mood", progress=False)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_tiny_inputs_never_crash(tmp_path, n):
    fs, base = shards.resolve(str(tmp_path))
    rng = np.random.default_rng(n)
    ids = [f"t{i}" for i in range(n)]
    shards.write_table_atomic(
        fs,
        f"{base}/manifest.parquet",
        pa.table({"track_id": ids, "path": ids, "genre": ["a", "b"] * (n // 2) + ["a"] * (n % 2)}),
    )
    cols = {
        "track_id": pa.array(ids),
        "timbre__a": pa.array(rng.normal(size=n).astype(np.float32)),
        "timbre__b": pa.array(rng.normal(size=n).astype(np.float32)),
    }
    shards.write_table_atomic(fs, shards.new_shard_path(base, "features"), pa.table(cols))
    m = analyze(str(tmp_path), label_col="genre", progress=False)
    df = pd.read_parquet(tmp_path / "clusters.parquet")
    assert len(df) == n and m["n_tracks"] == n
    assert m["k"] == max(1, n - 1)
    assert any("clamped" in note for note in m["notes"])
    if n < 5:
        assert "skipped" in m["oof"] and not (tmp_path / "oof.parquet").exists()
    if n < 3:
        assert m["umap"]["skipped"] and df["umap_x"].isna().all()
        assert m["silhouette"] is None and m["kmeans_metrics"]["reason"]
    assert (df["hdbscan"] == -1).all()  # fewer rows than min_cluster_size=4 → noise, or too few
    assert (tmp_path / "report.html").exists() and "report_error" not in m


def test_every_track_failed(tmp_path):
    make_out(tmp_path, errors=3, features=False, n_per=0)
    m = analyze(str(tmp_path), progress=False)
    assert m["n_tracks"] == 0 and m["n_failed"] == 3 and "skipped" in m
    assert len(pd.read_parquet(tmp_path / "clusters.parquet")) == 0
    assert (tmp_path / "report.html").exists()


def write_chunk_embeddings(out, ids, genre, d=16, windows=3, seed=1):
    """Chunk-level embeddings (one row per window) in a narrow cone, with tag probabilities."""
    rng = np.random.default_rng(seed)
    centres = {g: rng.normal(size=d) for g in GENRES}
    fs, base = shards.resolve(str(out))
    rows_id, rows_w, rows_x, rock = [], [], [], []
    for t, g in zip(ids, genre, strict=True):
        for w in range(windows):
            rows_id.append(t)
            rows_w.append(w)
            rows_x.append(20 + centres[g] + 0.1 * rng.normal(size=d))
            rock.append(0.9 if g == "metal" else 0.1)
    X = np.asarray(rows_x, np.float32)
    order = rng.permutation(len(rows_id))
    for part in np.array_split(order, 2):
        table = pa.table(
            {
                "track_id": pa.array([rows_id[i] for i in part]),
                "window_index": pa.array(np.asarray(rows_w, np.int32)[part]),
                "embedding": shards.embedding_array(X[part]),
                "tag__rock": pa.array(np.asarray(rock, np.float32)[part]),
                "tag__jazz": pa.array(np.full(len(part), 0.5, np.float32)),
            }
        )
        shards.write_table_atomic(fs, shards.new_shard_path(base, "embeddings/clap"), table)


def test_chunk_level_embeddings_vote_and_sanity(tmp_path):
    ids, genre, _ = make_out(tmp_path)
    write_chunk_embeddings(tmp_path, ids, genre)
    m = analyze(
        str(tmp_path),
        config_with(k=3, pca=0.9, matrix="embeddings"),
        label_col="genre",
        progress=False,
    )
    assert m["pca"]["explained_variance"] >= 0.9 and m["pca"]["n_components"] < 16
    assert m["matrix"]["matrix"] == "embeddings" and m["matrix"]["chunk_level"]
    assert m["n_tracks"] == 24 and m["n_windows"] == 72
    assert m["kmeans_metrics"]["level"] == "window"
    assert m["nmi"] == pytest.approx(1)
    sanity = m["embedding_sanity"]
    assert sanity["before"]["mean_pairwise_cosine"] > 0.9
    assert sanity["after"]["mean_pairwise_cosine"] < 0.2
    df = pd.read_parquet(tmp_path / "clusters.parquet")
    assert len(df) == 24 and df["top_tags"].str.startswith(("rock", "jazz")).all()
    metal = df[df["genre"] == "metal"]["top_tags"]
    assert metal.str.startswith("rock").all()
    oof = pd.read_parquet(tmp_path / "oof.parquet")
    assert len(oof) == 72 and "window_index" in oof
    s = json.loads((tmp_path / "cluster_summaries.json").read_text())
    assert all("top_tags" in e for e in s["kmeans"])


def test_both_matrices_with_weights_auto_k_and_sampled_fits(tmp_path):
    ids, genre, _ = make_out(tmp_path)
    write_chunk_embeddings(tmp_path, ids, genre)
    cfg = config_with(
        matrix="both",
        k="auto",
        k_auto_range=(2, 6),
        weights=(("clap", 0.5),),
        fit_sample=12,
        predict_batch=5,
        neighbors_pca_above=20,
        neighbors_pca_dims=4,
    )
    m = analyze(str(tmp_path), cfg, label_col="genre", progress=False)
    assert m["matrix"]["matrix"] == "both" and not m["matrix"]["chunk_level"]
    assert m["matrix"]["weights"] == {"timbre": 1.0, "classic": 1.0, "clap": 0.5}
    assert m["k_selection"]["best"] == m["k"] == 3
    assert [c["k"] for c in m["k_selection"]["curve"]] == [2, 3, 4, 5, 6]
    assert m["hdbscan"]["out_of_sample_rows"] == 12 and m["umap"]["out_of_sample_rows"] == 12
    assert m["neighbors_pca"]["n_components"] == 4
    assert m["nmi"] == pytest.approx(1)


def test_user_errors(tmp_path):
    make_out(tmp_path)
    with pytest.raises(ValueError, match="unknown matrix"):
        analyze(str(tmp_path), config_with(matrix="nope"), progress=False)
    with pytest.raises(ValueError, match="needs embeddings"):
        analyze(str(tmp_path), config_with(matrix="embeddings"), progress=False)
    with pytest.raises(ValueError, match="unknown families"):
        analyze(str(tmp_path), config_with(weights=(("zzz", 2.0),)), progress=False)


def test_default_config_is_the_seed_parameters():
    cfg = AnalysisConfig()
    assert (cfg.k, cfg.kmeans_n_init, cfg.random_state) == (8, 10, 42)
    assert (cfg.hdbscan_min_cluster_size, cfg.hdbscan_min_samples) == (4, 2)
    assert (cfg.umap_n_neighbors, cfg.umap_min_dist) == (10, 0.1)


def test_classic_chunks_are_clustered_per_chunk_with_a_vote(tmp_path):
    ids, genre, _ = make_out(tmp_path)
    rng = np.random.default_rng(3)
    centres = {g: rng.normal(0, 6, 33) for g in sorted(set(genre))}
    rows = [
        (t, c, centres[g] + rng.normal(0, 0.5, 33))
        for t, g in zip(ids, genre, strict=True)
        for c in range(3)
    ]
    table = pa.table(
        {
            "track_id": pa.array([r[0] for r in rows]),
            "chunk_index": pa.array([r[1] for r in rows], pa.int32()),
            **{
                f"classic__f{j:02d}": pa.array(np.array([r[2][j] for r in rows], np.float32))
                for j in range(33)
            },
        }
    )
    fs, base = shards.resolve(str(tmp_path))
    shards.write_table_atomic(fs, shards.new_shard_path(base, "features_chunks"), table)
    m = analyze(
        str(tmp_path),
        config_with(k=3, matrix="features", chunk_level=True),
        label_col="genre",
        progress=False,
    )
    assert m["matrix"]["chunk_level"] and m["matrix"]["n_rows"] == 3 * len(ids)
    assert m["n_tracks"] == len(ids) and m["nmi"] == pytest.approx(1)
    assert len(pd.read_parquet(tmp_path / "clusters.parquet")) == len(ids)
