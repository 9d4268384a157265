"""soundclust export: every format is read back and equals what OUT holds."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from soundclust_ray import outdir, shards
from soundclust_ray.embed.postprocess import center_and_normalize
from soundclust_ray.errors import UserError
from soundclust_ray.export import export

N = 24


def open_text(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture()
def run_out(tmp_path):
    """An OUT as a run leaves it: manifest, features, musicnn, clusters, one OOF field."""
    rng = np.random.default_rng(0)
    out = str(tmp_path / "out")
    ids = [f"g{i % 3}/song{i:02d}.mp3" for i in range(N)]
    order = np.argsort(ids)
    paths = [str(tmp_path / "music" / t) for t in ids]
    manifest = pd.DataFrame({"track_id": ids, "path": paths, "genre": [t[:2] for t in ids]})
    outdir.write_table(out, outdir.MANIFEST, pa.Table.from_pandas(manifest, preserve_index=False))
    fs, base = outdir.resolve(out)
    feats = rng.normal(size=(N, 3)).astype(np.float32)
    cols = {f"timbre__f{j}": pa.array(feats[:, j]) for j in range(3)}
    table = pa.table({"track_id": ids, **cols})
    shards.write_table_atomic(fs, shards.new_shard_path(base, outdir.FEATURES), table)
    emb = (rng.normal(size=(N, 8)) + 5).astype(np.float32)
    table = pa.table({"track_id": ids, "embedding": shards.embedding_array(emb)})
    shards.write_table_atomic(
        fs, shards.new_shard_path(base, outdir.embeddings_product("musicnn")), table
    )
    clusters = manifest.iloc[order].reset_index(drop=True)
    clusters["kmeans"] = np.arange(N, dtype=np.int32) % 2
    clusters["hdbscan"] = np.where(np.arange(N) < 4, -1, 0).astype(np.int32)
    for c in ("umap_x", "umap_y", "pca_x", "pca_y"):
        clusters[c] = rng.normal(size=N).astype(np.float32)
    outdir.write_table(out, outdir.CLUSTERS, pa.Table.from_pandas(clusters, preserve_index=False))
    oof = pa.table({"track_id": sorted(ids), "label": pa.array(np.arange(N) % 4, pa.int32())})
    outdir.write_table(out, outdir.oof_field_table("bars_start"), oof)
    return {
        "out": out,
        "ids": np.array(ids)[order],
        "feats": feats[order],
        "emb": emb[order],
        "clusters": clusters,
        "tmp": tmp_path,
    }


def test_npz_raw_and_normalised(run_out):
    written = export(run_out["out"], "npz")
    folder = outdir.path(run_out["out"], outdir.EXPORT)
    assert sorted(os.path.basename(p) for p in written) == [
        "features.npz",
        "musicnn_embeddings.npz",
        "musicnn_embeddings_normalized.npz",
    ]
    raw = np.load(os.path.join(folder, "musicnn_embeddings.npz"), allow_pickle=False)
    assert raw["track_ids"].tolist() == run_out["ids"].tolist()
    np.testing.assert_array_equal(raw["embeddings"], run_out["emb"])
    normal = np.load(os.path.join(folder, "musicnn_embeddings_normalized.npz"))
    np.testing.assert_allclose(
        normal["embeddings"], center_and_normalize(run_out["emb"]), atol=1e-6
    )
    feats = np.load(os.path.join(folder, "features.npz"))
    np.testing.assert_array_equal(feats["features"], run_out["feats"])
    assert feats["columns"].tolist() == ["timbre__f0", "timbre__f1", "timbre__f2"]


def test_npy_vectors_id_to_index_and_cluster_labels(run_out, tmp_path):
    to = str(tmp_path / "elsewhere")
    export(run_out["out"], "npy", to)
    names = sorted(os.listdir(to))
    assert names == [
        "cluster_label_bars_start.npy",
        "cluster_label_hdbscan.npy",
        "cluster_label_kmeans.npy",
        "features_vectors_3d.npy",
        "id_to_index.json",
        "musicnn_vectors_8d.npy",
    ]
    vectors = np.load(os.path.join(to, "musicnn_vectors_8d.npy"), allow_pickle=False)
    id_to_index = json.loads(open_text(os.path.join(to, "id_to_index.json")))
    for track_id, row in zip(run_out["ids"], run_out["emb"], strict=True):
        np.testing.assert_array_equal(vectors[id_to_index[track_id]], row)
    kmeans = np.load(os.path.join(to, "cluster_label_kmeans.npy"))
    assert (
        kmeans.shape == (N, 1) and kmeans[:, 0].tolist() == run_out["clusters"]["kmeans"].tolist()
    )
    assert np.load(os.path.join(to, "cluster_label_bars_start.npy"))[:, 0].tolist() == [
        i % 4 for i in range(N)
    ]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_joined_table_has_metadata_features_clusters_and_maps(run_out, fmt):
    (path,) = export(run_out["out"], fmt)
    table = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    assert os.path.basename(path) in ("acoustic_embeddings_with_clusters.csv", "tracks.parquet")
    assert table["track_id"].tolist() == run_out["ids"].tolist()
    assert table["file_name"].tolist() == [os.path.basename(t) for t in run_out["ids"]]
    assert table.columns[-6:].tolist() == [
        "cluster_kmeans",
        "cluster_hdbscan",
        "umap_x",
        "umap_y",
        "pca_x",
        "pca_y",
    ]
    np.testing.assert_allclose(
        table[["timbre__f0", "timbre__f1", "timbre__f2"]], run_out["feats"], rtol=1e-6
    )
    assert (table["genre"] == run_out["clusters"]["genre"]).all()


def test_m3u_one_playlist_per_cluster_centre_first(run_out):
    written = export(run_out["out"], "m3u")
    assert sorted(os.path.basename(p) for p in written) == [
        "hdbscan_000.m3u",
        "kmeans_000.m3u",
        "kmeans_001.m3u",
    ]
    clusters = run_out["clusters"]
    U = center_and_normalize(run_out["emb"])
    for path in written:
        lines = open_text(path).splitlines()
        assert lines[0] == "#EXTM3U"
        resolved = [os.path.normpath(os.path.join(os.path.dirname(path), p)) for p in lines[1:]]
        column, label = os.path.basename(path)[:-4].rsplit("_", 1)
        members = np.flatnonzero(clusters[column].to_numpy() == int(label))
        assert sorted(resolved) == sorted(clusters["path"].to_numpy()[members].tolist())
        assert not any(os.path.isabs(p) for p in lines[1:])
        centre = U[members].mean(0)
        cosine = U[members] @ (centre / np.linalg.norm(centre))
        expected = clusters["path"].to_numpy()[members[np.argsort(-cosine, kind="stable")]]
        assert resolved == expected.tolist()


def test_unknown_format_and_missing_out_are_user_errors(run_out, tmp_path):
    with pytest.raises(UserError, match="unknown export format 'xml'"):
        export(run_out["out"], "xml")
    with pytest.raises(UserError, match="no manifest.parquet"):
        export(str(tmp_path / "nothing"), "csv")


def test_cli_export_prints_the_files_and_refuses_a_non_run(run_out, tmp_path, capsys):
    from soundclust_ray.cli import main

    to = str(tmp_path / "csv")
    assert main(["export", run_out["out"], "--format", "csv", "--to", to]) == 0
    assert capsys.readouterr().out.split() == [
        os.path.join(to, "acoustic_embeddings_with_clusters.csv")
    ]
    assert main(["export", str(tmp_path / "none"), "--format", "m3u"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "manifest.parquet" in err[0]
