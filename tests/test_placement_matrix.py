"""The saved placement steps redo the analysis's matrix and the similar-track index exactly,
for every matrix kind (small OUT folders written with shards.py; no Ray, no audio)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from helpers import config_with
from test_analysis_driver import make_out

from soundclust_ray import outdir, shards
from soundclust_ray.analysis import placement, search
from soundclust_ray.analysis.driver import analyze, reduce_step
from soundclust_ray.analysis.matrix import gather_matrix
from soundclust_ray.errors import UserError

FAST = dict(k=3, report=False, umap=False, oof=False, duplicates=False)


def add_embeddings(out, ids, X, backend: str, windows: int, d: int = 16) -> None:
    """Embedding shards correlated with the features (``windows`` rows per track, 0: one)."""
    rng = np.random.default_rng(5)
    E = X @ rng.normal(size=(X.shape[1], d)).astype(np.float32) + 30
    rows = [
        (t, w, E[i] + rng.normal(scale=0.5, size=d))
        for i, t in enumerate(ids)
        for w in range(max(windows, 1))
    ]
    cols = {"track_id": pa.array([r[0] for r in rows])}
    if windows:
        cols["window_index"] = pa.array([r[1] for r in rows], pa.int32())
    flat = np.asarray([r[2] for r in rows], np.float32).ravel()
    cols[shards.EMBEDDING_COLUMN] = pa.FixedSizeListArray.from_arrays(pa.array(flat), d)
    fs, base = shards.resolve(str(out))
    path = shards.new_shard_path(base, outdir.embeddings_product(backend))
    shards.write_table_atomic(fs, path, pa.table(cols))


CASES = {
    "features, weights": (dict(matrix="features", weights=(("timbre", 2.0),)), None, 0),
    "windowed embeddings, PCA": (dict(matrix="embeddings", pca=5), "clap", 3),
    "both, windowed, PCA": (dict(matrix="both", pca=0.9), "clap", 3),
    "both, weights": (dict(matrix="both", weights=(("musicnn", 2.0),)), "musicnn", 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_saved_steps_redo_the_clustered_matrix_and_the_index(tmp_path, case):
    options, backend, windows = CASES[case]
    out = str(tmp_path / "out")
    ids, _, X = make_out(out)
    if backend:
        add_embeddings(out, ids, X, backend, windows)
    cfg = config_with(**FAST, **options)
    analyze(out, cfg, label_col="genre", progress=False)
    model = placement.load_placement(out)
    raw = placement.raw_rows(out, model)
    g, _ = gather_matrix(out, cfg)
    clustered, _, _ = reduce_step(g.X, cfg)
    redone = placement.apply_steps(model.steps, raw.X, raw.track_ids)
    np.testing.assert_allclose(redone, clustered, atol=1e-5)
    index = search.open_index(out)
    stored = np.vstack([index.vector(i) for i in range(len(index.track_ids))])
    np.testing.assert_allclose(
        placement.search_vectors(model, raw.X, raw.track_ids), stored, atol=1e-5
    )
    assert model.window_level == (windows > 0 and options["matrix"] != "both")
    tables = {}
    for kind, product in (("features", outdir.FEATURES), ("embeddings", backend)):
        if product:
            name = product if kind == "features" else outdir.embeddings_product(product)
            tables[kind] = pa.concat_tables(shards.iter_shard_tables(out, name))
    from_tables = placement.raw_rows_from_tables(model, **tables)
    assert from_tables.columns == raw.columns
    np.testing.assert_array_equal(from_tables.X, raw.X)


def test_a_model_of_another_analysis_is_refused(tmp_path):
    out = str(tmp_path / "out")
    ids, _, X = make_out(out)
    add_embeddings(out, ids, X, "musicnn", 0)
    analyze(out, config_with(**FAST, matrix="features"), progress=False)
    saved = outdir.read_bytes(out, outdir.fitted_file(placement.META))
    analyze(out, config_with(**FAST, matrix="embeddings"), progress=False)
    outdir.write_bytes(out, outdir.fitted_file(placement.META), saved)
    with pytest.raises(UserError, match="matrix features but OUT's last analysis clustered"):
        placement.load_placement(out)
    assert placement.load_placement(out, check=False).key["matrix"] == "features"
