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


def add_embeddings(out, ids, X, backend: str, windows: int, d: int = 16, tags: int = 0) -> None:
    """Embedding shards correlated with the features (``windows`` rows per track, 0: one),
    with ``tags`` tag-probability columns (``tag__t<i>``, a sigmoid of another projection)."""
    rng = np.random.default_rng(len(backend))
    E = X @ rng.normal(size=(X.shape[1], d)).astype(np.float32) + 30
    T = 1 / (1 + np.exp(-(X @ rng.normal(size=(X.shape[1], max(tags, 1))))))
    rows = [(i, t, w) for i, t in enumerate(ids) for w in range(max(windows, 1))]
    cols = {"track_id": pa.array([r[1] for r in rows])}
    if windows:
        cols["window_index"] = pa.array([r[2] for r in rows], pa.int32())
    noisy = np.asarray([E[i] + rng.normal(scale=0.5, size=d) for i, _, _ in rows], np.float32)
    cols[shards.EMBEDDING_COLUMN] = pa.FixedSizeListArray.from_arrays(pa.array(noisy.ravel()), d)
    for j in range(tags):
        cols[f"tag__t{j}"] = pa.array([T[i, j] for i, _, _ in rows], pa.float32())
    fs, base = shards.resolve(str(out))
    path = shards.new_shard_path(base, outdir.embeddings_product(backend))
    shards.write_table_atomic(fs, path, pa.table(cols))


CASES = {
    # name: (analysis options, [(backend, windows per track, tag columns)])
    "features, weights": (dict(matrix="features", weights=(("timbre", 2.0),)), []),
    "windowed embeddings, PCA": (dict(matrix="embeddings", pca=5), [("clap", 3, 0)]),
    "both, windowed, PCA": (dict(matrix="both", pca=0.9), [("clap", 3, 0)]),
    "both, weights": (dict(matrix="both", weights=(("musicnn", 2.0),)), [("musicnn", 0, 5)]),
    "auto = tags": (dict(matrix="auto"), [("musicnn", 0, 6)]),
    "tags ensemble, weights": (
        dict(matrix="tags", weights=(("msd_musicnn", 2.0),)),
        [("msd_musicnn", 0, 6), ("mtt_musicnn", 0, 4)],
    ),
    "embeddings ensemble, windowed + PCA": (
        dict(matrix="embeddings", pca=4),
        [("clap", 3, 0), ("musicnn", 0, 5)],
    ),
    "both, ensemble": (dict(matrix="both"), [("clap", 3, 0), ("musicnn", 0, 5)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_saved_steps_redo_the_clustered_matrix_and_the_index(tmp_path, case):
    options, backends = CASES[case]
    out = str(tmp_path / "out")
    ids, _, X = make_out(out)
    for backend, windows, tags in backends:
        add_embeddings(out, ids, X, backend, windows, tags=tags)
    cfg = config_with(**FAST, **options)
    metrics = analyze(out, cfg, label_col="genre", progress=False)
    if options["matrix"] == "auto":
        assert metrics["matrix"]["matrix"] == "tags"
    assert metrics["matrix"].get("backends", []) == [b for b, _, _ in backends]
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
    single_windowed = len(backends) == 1 and backends[0][1] > 0
    assert model.window_level == (single_windowed and options["matrix"] != "both")
    features = pa.concat_tables(shards.iter_shard_tables(out, outdir.FEATURES))
    embeddings = {
        b: pa.concat_tables(shards.iter_shard_tables(out, outdir.embeddings_product(b)))
        for b, _, _ in backends
    }
    from_tables = placement.raw_rows_from_tables(model, features, embeddings or None)
    assert from_tables.columns == raw.columns
    np.testing.assert_array_equal(from_tables.X, raw.X)


def test_tags_are_refused_where_no_backend_wrote_them(tmp_path):
    out = str(tmp_path / "out")
    ids, _, X = make_out(out)
    add_embeddings(out, ids, X, "clap", 0)
    add_embeddings(out, ids, X, "musicnn", 0, tags=3)
    auto = analyze(out, config_with(**FAST, backend="clap"), progress=False)
    assert (auto["matrix"]["matrix"], auto["matrix"]["backend"]) == ("embeddings", "clap")
    with pytest.raises(ValueError, match="embeddings/clap has none"):
        gather_matrix(out, config_with(**FAST, matrix="tags", backend="clap,musicnn"))
    with pytest.raises(ValueError, match="backend 'mtt_musicnn' not found"):
        gather_matrix(out, config_with(**FAST, matrix="tags", backend="mtt_musicnn"))


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
