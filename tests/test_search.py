"""Similar-track search: blocked exact top-k, IVF recall, matrix sources, unknown ids, output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from soundclust_ray import shards
from soundclust_ray.analysis.search import (
    IVFIndex,
    format_similar,
    format_similar_json,
    l2_normalize_inplace,
    load_search_matrix,
    similar_tracks,
    topk_cosine,
)
from soundclust_ray.config import RunConfig
from soundclust_ray.sources.tabular import run_tabular


def brute_force(X, Q, k, exclude=None):
    S = Q @ X.T
    if exclude is not None:
        S[np.arange(len(Q)), exclude] = -np.inf
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(S, order, 1)


@pytest.fixture(scope="module")
def unit_rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    return l2_normalize_inplace(rng.normal(size=(1000, 24)).astype(np.float32), block_rows=77)


def test_l2_normalize_blocks_and_zero_rows():
    X = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    X[3] = 0.0
    ref = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-30)
    X[9, 2] = np.nan
    l2_normalize_inplace(X, block_rows=7)
    np.testing.assert_allclose(np.delete(X, 9, 0), np.delete(ref, 9, 0), rtol=1e-6, atol=1e-7)
    assert not X[3].any() and X[9, 2] == 0.0
    np.testing.assert_allclose(np.linalg.norm(X[9]), 1.0, rtol=1e-6)


@pytest.mark.parametrize("k,block_rows", [(1, 1000), (10, 64), (10, 7), (50, 33)])
def test_topk_matches_brute_force(unit_rows, k, block_rows):
    Q = unit_rows[[5, 500, 999]]
    exclude = np.array([5, 500, 999])
    idx, sim = topk_cosine(unit_rows, Q, k, exclude=exclude, block_rows=block_rows)
    ref_idx, ref_sim = brute_force(unit_rows, Q, k, exclude)
    np.testing.assert_allclose(sim, ref_sim, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(idx, ref_idx)
    assert not np.isin(exclude[:, None], idx).any(axis=1).any()


def test_topk_clamps_k_to_rows():
    X = l2_normalize_inplace(np.eye(3, dtype=np.float32))
    idx, sim = topk_cosine(X, X[:1], k=10, exclude=np.array([0]))
    assert idx.shape == (1, 2) and set(idx[0]) == {1, 2}


def test_ivf_full_probe_is_exact_and_partial_probe_recalls(unit_rows):
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(20, 24)) * 4
    X = l2_normalize_inplace(
        (centers[rng.integers(0, 20, 4000)] + rng.normal(size=(4000, 24))).astype(np.float32)
    )
    index = IVFIndex(X, nlist=40)
    Q, exclude = X[:30], np.arange(30)
    exact_idx, exact_sim = topk_cosine(X, Q, 10, exclude=exclude)
    full_idx, full_sim = index.search(Q, 10, nprobe=40, exclude=exclude)
    np.testing.assert_allclose(full_sim, exact_sim, rtol=1e-5, atol=1e-6)
    approx_idx, _ = index.search(Q, 10, nprobe=6, exclude=exclude)
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(approx_idx, exact_idx, strict=True)]
    )
    assert recall > 0.8


def _write_out(tmp_path, features: np.ndarray, ids: list[str]) -> str:
    out = str(tmp_path / "out")
    fs, base = shards.resolve(out)
    cols = {f"timbre__f{j:02d}": pa.array(features[:, j]) for j in range(features.shape[1])}
    half = len(ids) // 2
    for part in (slice(0, half), slice(half, None)):
        table = pa.table({"track_id": ids[part], **{c: v[part] for c, v in cols.items()}})
        shards.write_table_atomic(fs, shards.new_shard_path(base, "features"), table)
    manifest = pd.DataFrame(
        {"track_id": ids, "path": [f"/x/{i}.wav" for i in ids], "genre": ["g"] * len(ids)}
    )
    shards.write_table_atomic(
        fs,
        shards.join(base, "manifest.parquet"),
        pa.Table.from_pandas(manifest, preserve_index=False),
    )
    return out


def test_similar_on_features_standardizes_first(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 4)).astype(np.float32)
    base[:, 0] *= 1000.0
    ids = [f"rock/{i:03d}.wav" for i in range(40)]
    out = _write_out(tmp_path, base, ids)
    table = similar_tracks(out, "rock/007.wav", k=5, matrix="features")
    assert list(table.columns[:3]) == ["rank", "track_id", "similarity"]
    assert table["rank"].tolist() == [1, 2, 3, 4, 5] and "rock/007.wav" not in set(table.track_id)
    assert (table["genre"] == "g").all() and table.similarity.is_monotonic_decreasing
    z = (base - base.mean(0)) / base.std(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    ref = np.argsort(-(z @ z[7]))[1:6]
    assert table["track_id"].tolist() == [ids[i] for i in ref]
    text = format_similar(table)
    assert text.splitlines()[0].startswith("nearest to rock/007.wav") and "features, exact" in text
    assert "/x/" not in text and len(text.splitlines()) == 7
    payload = json.loads(format_similar_json(table))
    assert payload["query"] == "rock/007.wav" and payload["matrix"] == "features"
    assert [r["track_id"] for r in payload["neighbours"]] == table["track_id"].tolist()
    approx = similar_tracks(
        out, "rock/007.wav", k=5, matrix="features", approximate=True, nprobe=99
    )
    assert approx["track_id"].tolist() == table["track_id"].tolist()


def test_unknown_id_lists_close_matches(tmp_path):
    ids = [f"rock/{i:03d}.wav" for i in range(12)]
    out = _write_out(
        tmp_path, np.random.default_rng(4).normal(size=(12, 3)).astype(np.float32), ids
    )
    with pytest.raises(
        ValueError, match=r"unknown track id '007.wav'.*close matches: rock/007.wav"
    ):
        similar_tracks(out, "007.wav")
    with pytest.raises(ValueError, match="no embedding shards"):
        similar_tracks(out, "rock/001.wav", matrix="embeddings")
    with pytest.raises(ValueError, match="unknown matrix"):
        similar_tracks(out, "rock/001.wav", matrix="pixels")


def test_embeddings_pool_windows_and_auto(tmp_path):
    out = _write_out(tmp_path, np.zeros((6, 2), dtype=np.float32), [f"t{i}" for i in range(6)])
    fs, base = shards.resolve(out)
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(12, 16)).astype(np.float32)
    table = pa.table(
        {
            "track_id": [f"t{i // 2}" for i in range(12)],
            "window_index": pa.array([i % 2 for i in range(12)], type=pa.int32()),
            "embedding": shards.embedding_array(emb),
        }
    )
    shards.write_table_atomic(fs, shards.new_shard_path(base, "embeddings/clap"), table)
    sm = load_search_matrix(out, "auto")
    assert sm.source == "embeddings/clap" and sm.X.shape == (6, 16)
    pooled = emb.reshape(6, 2, 16).mean(1)
    np.testing.assert_allclose(sm.X[2], pooled[2] / np.linalg.norm(pooled[2]), rtol=1e-5)
    assert load_search_matrix(out, "embeddings:clap").source == "embeddings/clap"


def test_tabular_run_then_similar(tmp_path):
    rng = np.random.default_rng(6)
    n = 300
    frame = pd.DataFrame({name: rng.random(n) for name in RunConfig().tabular.audio_features})
    frame["id"] = [f"sp{i:04d}" for i in range(n)]
    frame["name"] = [f"song {i}" for i in range(n)]
    src = tmp_path / "t.parquet"
    frame.to_parquet(src)
    out = str(tmp_path / "tab")
    run_tabular(str(src), out)
    table = similar_tracks(out, "sp0010", k=3)
    assert (
        table.attrs["matrix"] == "embeddings/tabular" and table["name"].str.startswith("song").all()
    )
