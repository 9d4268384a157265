"""Similar-track search: FAISS indexes against numpy, the clustering's geometry, the OUT index."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from soundclust_ray import outdir, shards
from soundclust_ray.analysis.search import (
    SearchIndex,
    build_faiss_index,
    format_similar,
    format_similar_json,
    l2_normalize_inplace,
    open_index,
    similar_tracks,
)
from soundclust_ray.config import SearchConfig
from soundclust_ray.errors import UserError


def brute_force(X, Q, k, exclude):
    S = Q @ X.T
    S[np.arange(len(Q)), exclude] = -np.inf
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(S, order, 1)


def unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def clustered_rows(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d)) * 4
    X = centres[rng.integers(0, 20, n)] + rng.normal(size=(n, d))
    return l2_normalize_inplace(X.astype(np.float32))


def test_l2_normalize_blocks_and_zero_rows():
    X = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    X[3] = 0.0
    ref = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-30)
    X[9, 2] = np.nan
    l2_normalize_inplace(X, block_rows=7)
    np.testing.assert_allclose(np.delete(X, 9, 0), np.delete(ref, 9, 0), rtol=1e-6, atol=1e-7)
    assert not X[3].any() and X[9, 2] == 0.0
    np.testing.assert_allclose(np.linalg.norm(X[9]), 1.0, rtol=1e-6)


@pytest.mark.parametrize("k", [1, 10, 50])
def test_exact_index_equals_numpy_and_skips_the_query(k):
    X = clustered_rows(1000, 24, 0)
    si = SearchIndex(np.arange(1000), build_faiss_index(X, True, SearchConfig(), 0), {}, True)
    rows = np.array([5, 500, 999])
    idx, sim = si.search(X[rows], k, exclude=rows)
    ref_idx, ref_sim = brute_force(X, X[rows], k, rows)
    np.testing.assert_allclose(sim, ref_sim, rtol=1e-5, atol=1e-5)
    assert (idx == ref_idx).mean() > 0.99  # ties may swap; the similarities above are equal
    assert not (idx == rows[:, None]).any()


def test_k_above_rows_returns_the_others_only():
    X = l2_normalize_inplace(np.eye(3, dtype=np.float32))
    si = SearchIndex(np.arange(3), build_faiss_index(X, True, SearchConfig(), 0), {}, True)
    idx, _ = si.search(X[:1], 10, exclude=np.array([0]))
    assert set(idx[0][idx[0] >= 0]) == {1, 2}


def test_ivf_full_probe_is_exact_and_partial_probe_recalls():
    X = clustered_rows(4000, 24, 2)
    search = SearchConfig(ivf_cells_per_sqrt_row=0.64, ivf_train_per_cell=64)
    exact = SearchIndex(np.arange(4000), build_faiss_index(X, True, search, 0), {}, True)
    index = build_faiss_index(X, False, search, 0)
    assert index.nlist == 40
    ivf = SearchIndex(np.arange(4000), index, {}, False)
    rows = np.arange(30)
    exact_idx, exact_sim = exact.search(X[rows], 10, exclude=rows)
    index.nprobe = 40
    _, full_sim = ivf.search(X[rows], 10, exclude=rows)
    np.testing.assert_allclose(full_sim, exact_sim, rtol=1e-5, atol=1e-5)
    index.nprobe = 4
    approx_idx, _ = ivf.search(X[rows], 10, exclude=rows)
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(approx_idx, exact_idx, strict=True)]
    )
    assert recall > 0.8


def write_features(out: str, features: np.ndarray, ids: list[str], families=("timbre",)) -> None:
    fs, base = outdir.resolve(out)
    width = features.shape[1] // len(families)
    names = [f"{families[j // width]}__f{j:02d}" for j in range(features.shape[1])]
    half = len(ids) // 2
    for part in (slice(0, half), slice(half, None)):
        cols = {n: pa.array(features[part, j]) for j, n in enumerate(names)}
        table = pa.table({"track_id": ids[part], **cols})
        shards.write_table_atomic(fs, shards.new_shard_path(base, outdir.FEATURES), table)
    write_manifest(out, ids)


def write_manifest(out: str, ids: list[str]) -> None:
    manifest = pd.DataFrame(
        {"track_id": ids, "path": [f"/x/{i}.wav" for i in ids], "genre": ["g"] * len(ids)}
    )
    outdir.write_table(out, outdir.MANIFEST, pa.Table.from_pandas(manifest, preserve_index=False))


def write_embeddings(out: str, emb: np.ndarray, ids: list[str], backend: str = "musicnn") -> None:
    fs, base = outdir.resolve(out)
    table = pa.table({"track_id": ids, "embedding": shards.embedding_array(emb)})
    product = outdir.embeddings_product(backend)
    shards.write_table_atomic(fs, shards.new_shard_path(base, product), table)


def test_features_are_searched_standardized(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 4)).astype(np.float32)
    base[:, 0] *= 1000.0
    ids = [f"rock/{i:03d}.wav" for i in range(40)]
    out = str(tmp_path / "out")
    write_features(out, base, ids)
    table = similar_tracks(out, "rock/007.wav", k=5, matrix="features")
    assert list(table.columns[:3]) == ["rank", "track_id", "similarity"]
    assert table["rank"].tolist() == [1, 2, 3, 4, 5] and "rock/007.wav" not in set(table.track_id)
    assert (table["genre"] == "g").all() and table.similarity.is_monotonic_decreasing
    z = unit((base - base.mean(0)) / base.std(0))
    ref = np.argsort(-(z @ z[7]))[1:6]
    assert table["track_id"].tolist() == [ids[i] for i in ref]
    text = format_similar(table)
    assert text.splitlines()[0].startswith("nearest to rock/007.wav") and "features, exact" in text
    assert "/x/" not in text and len(text.splitlines()) == 7
    payload = json.loads(format_similar_json(table))
    assert payload["query"] == "rock/007.wav" and payload["matrix"] == "features"
    assert payload["geometry"]["scaling"] == "standard"
    assert [r["track_id"] for r in payload["neighbours"]] == table["track_id"].tolist()


def test_embeddings_are_centred_like_the_clustering(tmp_path):
    """A narrow cone (a shared offset, as CLAP's): centring changes who is nearest."""
    rng = np.random.default_rng(4)
    ids = [f"t{i:02d}" for i in range(60)]
    emb = (rng.normal(size=(60, 16)) + 0.3 * rng.normal(size=16) * 20).astype(np.float32)
    out = str(tmp_path / "out")
    write_embeddings(out, emb, ids)
    write_manifest(out, ids)
    table = similar_tracks(out, "t07", k=8)
    centred = unit(emb - emb.mean(0))
    plain = unit(emb)
    ref_centred = [ids[i] for i in np.argsort(-(centred @ centred[7]))[1:9]]
    ref_plain = [ids[i] for i in np.argsort(-(plain @ plain[7]))[1:9]]
    assert ref_centred != ref_plain
    assert table["track_id"].tolist() == ref_centred
    np.testing.assert_allclose(
        table["similarity"], np.sort(centred @ centred[7])[::-1][1:9], atol=1e-5
    )
    payload = json.loads(format_similar_json(table))
    assert payload["matrix"] == "embeddings/musicnn"
    assert payload["geometry"]["embeddings"] == "centered + L2-normalized"


def test_the_runs_family_weights_apply(tmp_path):
    """metrics.json says classic was weighted 0: neighbours then follow timbre alone."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(50, 6)).astype(np.float32)
    ids = [f"s{i:02d}" for i in range(50)]
    out = str(tmp_path / "out")
    write_features(out, X, ids, families=("timbre", "classic"))
    config = {"matrix": "features", "weights": [["classic", 0.0]]}
    outdir.write_json(out, outdir.METRICS, {"config": config, "matrix": {"matrix": "features"}})
    table = similar_tracks(out, "s03", k=5)
    t = X[:, :3]
    z = unit((t - t.mean(0)) / t.std(0))
    assert table["track_id"].tolist() == [ids[i] for i in np.argsort(-(z @ z[3]))[1:6]]
    assert table.attrs["geometry"]["weights"] == {"timbre": 1.0, "classic": 0.0}


def test_index_is_kept_in_out_and_rebuilt_when_shards_change(tmp_path):
    rng = np.random.default_rng(6)
    ids = [f"a{i:02d}" for i in range(30)]
    out = str(tmp_path / "out")
    write_embeddings(out, rng.normal(size=(30, 8)).astype(np.float32), ids)
    write_manifest(out, ids)
    first = open_index(out)
    files = outdir.list_files(out, outdir.INDEX)
    assert sorted(f.split(".", 1)[1] for f in files) == ["faiss", "ids.parquet", "json"]
    mtime = (tmp_path / "out" / outdir.index_file(first.key, ".faiss")).stat().st_mtime_ns
    again = open_index(out)
    assert again.key == first.key and again.index is not first.index
    assert (tmp_path / "out" / outdir.index_file(first.key, ".faiss")).stat().st_mtime_ns == mtime
    write_embeddings(out, rng.normal(size=(1, 8)).astype(np.float32), ["new"])
    grown = open_index(out)
    assert grown.key != first.key and "new" in set(grown.track_ids)
    assert all(f.startswith(grown.key) for f in outdir.list_files(out, outdir.INDEX))
    forced = open_index(out, approximate=True)
    assert not forced.exact and forced.geometry["index"].startswith("IVF")


def test_unknown_id_and_matrix_are_user_errors(tmp_path):
    ids = [f"rock/{i:03d}.wav" for i in range(12)]
    out = str(tmp_path / "out")
    write_features(out, np.random.default_rng(7).normal(size=(12, 3)).astype(np.float32), ids)
    with pytest.raises(UserError, match=r"unknown track id '007.wav'.*close matches: rock/007.wav"):
        similar_tracks(out, "007.wav")
    with pytest.raises(UserError, match="needs embeddings"):
        similar_tracks(out, "rock/001.wav", matrix="embeddings")
    with pytest.raises(UserError, match="unknown matrix"):
        similar_tracks(out, "rock/001.wav", matrix="pixels")


def test_the_runs_pca_applies(tmp_path):
    """metrics.json says the run clustered 2 PCA components: similar searches those."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(8)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    ids = [f"p{i:02d}" for i in range(40)]
    out = str(tmp_path / "out")
    write_features(out, X, ids)
    config = {"matrix": "features", "pca": 2}
    outdir.write_json(out, outdir.METRICS, {"config": config, "matrix": {"matrix": "features"}})
    table = similar_tracks(out, "p04", k=5)
    z = (X - X.mean(0)) / X.std(0)
    p = unit(PCA(2, random_state=42).fit_transform(z))
    assert table["track_id"].tolist() == [ids[i] for i in np.argsort(-(p @ p[4]))[1:6]]
    assert table.attrs["geometry"]["pca"] == 2


def test_cli_similar_json_states_the_geometry_and_unknown_id_is_one_line(tmp_path, capsys):
    from soundclust_ray.cli import main

    rng = np.random.default_rng(9)
    ids = [f"c{i:02d}" for i in range(20)]
    out = str(tmp_path / "out")
    write_embeddings(out, rng.normal(size=(20, 8)).astype(np.float32), ids)
    write_manifest(out, ids)
    assert main(["similar", out, "--id", "c03", "--k", "3", "--json", "--index", "exact"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["exact"] is True and len(payload["neighbours"]) == 3
    assert payload["geometry"]["index"] == "IndexFlatIP (exact)"
    assert main(["similar", out, "--id", "c3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown track id 'c3'" in err[0]


def test_tag_ranking_list_and_clear_lines(tmp_path, capsys):
    from soundclust_ray.cli import main

    rng = np.random.default_rng(10)
    ids = [f"m{i:02d}" for i in range(12)]
    out = str(tmp_path / "out")
    fs, base = outdir.resolve(out)
    piano = rng.random(12).astype(np.float32)
    table = pa.table(
        {
            "track_id": ids,
            "embedding": shards.embedding_array(rng.normal(size=(12, 4)).astype(np.float32)),
            "tag__piano": piano,
            "tag__rock": 1 - piano,
        }
    )
    shards.write_table_atomic(fs, shards.new_shard_path(base, "embeddings/musicnn"), table)
    write_manifest(out, ids)
    assert main(["similar", out, "--tag", "piano", "--k", "4", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [r["track_id"] for r in payload["neighbours"]] == [
        ids[i] for i in np.argsort(-piano)[:4]
    ]
    assert main(["similar", out, "--list-tags"]) == 0
    assert capsys.readouterr().out.split() == ["piano", "rock"]
    assert main(["similar", out, "--tag", "pianos"]) == 2
    assert "close: piano" in capsys.readouterr().err
    plain = str(tmp_path / "plain")
    write_features(plain, rng.normal(size=(6, 2)).astype(np.float32), ids[:6])
    assert main(["similar", plain, "--tag", "piano"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tag probabilities" in err[0]
