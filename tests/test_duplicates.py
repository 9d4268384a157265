"""Near-duplicates: FAISS range search against numpy pairs, and OUT/duplicates.parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import outdir, shards
from soundclust_ray.analysis.duplicates import (
    near_duplicate_pairs,
    read_duplicates,
    write_duplicates,
)
from soundclust_ray.analysis.search import build_faiss_index, l2_normalize_inplace, open_index
from soundclust_ray.config import AnalysisConfig, SearchConfig, to_dict


def write_run(out: str, X: np.ndarray, ids: list[str]) -> None:
    """An OUT with one musicnn embedding shard and its manifest."""
    fs, base = outdir.resolve(out)
    table = pa.table({"track_id": ids, "embedding": shards.embedding_array(X)})
    shards.write_table_atomic(fs, shards.new_shard_path(base, "embeddings/musicnn"), table)
    manifest = pd.DataFrame({"track_id": ids, "path": [f"/x/{i}.wav" for i in ids]})
    outdir.write_table(out, outdir.MANIFEST, pa.Table.from_pandas(manifest, preserve_index=False))


def rows_with_copies(seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """200 random unit rows; rows 10-14 get a slightly perturbed copy appended."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 32)).astype(np.float32)
    copies = X[10:15] + 0.05 * rng.normal(size=(5, 32)).astype(np.float32)
    return l2_normalize_inplace(np.vstack([X, copies])), [(10 + i, 200 + i) for i in range(5)]


def test_pairs_equal_numpy_above_the_threshold():
    X, planted = rows_with_copies(0)
    S = X @ X.T
    for threshold in (0.99, 0.5, 0.3):
        a, b, s = near_duplicate_pairs(build_faiss_index(X, True, SearchConfig(), 0), threshold, 37)
        ref_a, ref_b = np.nonzero(np.triu(threshold <= S, 1))
        assert list(zip(a, b, strict=True)) == list(zip(ref_a, ref_b, strict=True))
        np.testing.assert_allclose(s, S[ref_a, ref_b], atol=1e-5)
    a, b, _ = near_duplicate_pairs(build_faiss_index(X, True, SearchConfig(), 0), 0.99)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == planted


def test_ivf_index_finds_the_planted_copies():
    X, planted = rows_with_copies(1)
    index = build_faiss_index(X, False, SearchConfig(ivf_train_per_cell=10), 0)
    a, b, _ = near_duplicate_pairs(index, 0.99)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == planted


def test_write_duplicates_uses_the_runs_index(tmp_path):
    X, planted = rows_with_copies(2)
    ids = [f"t{i:03d}" for i in range(len(X))]
    out = str(tmp_path / "out")
    write_run(out, X, ids)
    entry = write_duplicates(out, AnalysisConfig(duplicate_threshold=0.99))
    assert (
        entry["n_pairs"] == 5
        and entry["n_tracks"] == 10
        and entry["matrix"] == "embeddings/musicnn"
    )
    table = read_duplicates(out)
    assert list(zip(table.track_id_a, table.track_id_b, strict=True)) == [
        (ids[i], ids[j]) for i, j in planted
    ]
    assert (table.cosine >= 0.99).all() and outdir.exists(out, outdir.DUPLICATES)
    assert read_duplicates(str(tmp_path / "none")).empty


def test_large_exact_index_is_paired_through_ivf(tmp_path):
    X, planted = rows_with_copies(3)
    ids = [f"t{i:03d}" for i in range(len(X))]
    out = str(tmp_path / "out")
    write_run(out, X, ids)
    cfg = AnalysisConfig(duplicate_threshold=0.99, duplicates_exact_max_rows=100)
    entry = write_duplicates(out, cfg, {"matrix": "embeddings", "backend": "musicnn"})
    assert entry["n_pairs"] == 5 and entry["exact"] is False
    table = read_duplicates(out)
    assert table.track_id_a.tolist() == [ids[i] for i, _ in planted]
    metrics = {"config": to_dict(cfg), "matrix": {"matrix": "embeddings", "backend": "musicnn"}}
    outdir.write_json(out, outdir.METRICS, metrics)
    (key,) = {f.split(".")[0] for f in outdir.list_files(out, outdir.INDEX)}
    assert open_index(out).key == key  # similar reuses the index the analysis built


def test_analyze_writes_the_pairs_and_counts_them(tmp_path):
    from soundclust_ray.analysis.driver import analyze

    X, planted = rows_with_copies(4)
    ids = [f"t{i:03d}" for i in range(len(X))]
    out = str(tmp_path / "out")
    write_run(out, X, ids)
    cfg = AnalysisConfig(k=3, umap=False, hdbscan=False, report=False, oof=False)
    metrics = analyze(out, cfg, progress=False)
    assert metrics["duplicates"]["n_pairs"] == len(read_duplicates(out)) >= 5
    assert outdir.DUPLICATES in metrics["outputs"]
    assert {(ids[i], ids[j]) for i, j in planted} <= set(
        zip(read_duplicates(out).track_id_a, read_duplicates(out).track_id_b, strict=True)
    )
    (key,) = {f.split(".")[0] for f in outdir.list_files(out, outdir.INDEX)}
    assert open_index(out).key == key
    off = analyze(
        out,
        AnalysisConfig(k=3, umap=False, hdbscan=False, report=False, oof=False, duplicates=False),
        progress=False,
    )
    assert "skipped" in off["duplicates"] and outdir.DUPLICATES not in off["outputs"]
