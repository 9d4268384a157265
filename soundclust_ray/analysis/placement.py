"""Placing new tracks into a saved clustering without moving the old ones.

A growing catalogue must keep its map: re-running the analysis on more tracks refits k-means,
HDBSCAN and UMAP and moves every point. Instead every analysis saves what it fitted — the
preprocessing steps that turned the gathered raw rows into the clustered matrix (steps.py:
standardization, centring, L2, family/block weights, window pooling, PCA), the k-means centres,
the 2-D PCA axes, and a seeded sample of the training rows with their HDBSCAN labels and UMAP
positions — as arrays (``.npz``, read with ``allow_pickle=False``) plus JSON, never pickle.
:func:`place` then assigns new rows:

- k-means: the nearest saved centre (what ``KMeans.predict`` does);
- PCA map: the saved axes, exactly;
- HDBSCAN label: approximate_predict's rule on the saved condensed tree (``clustering.
  assign_hdbscan``, what the analysis itself does for rows outside its fitted sample); the
  majority label of the nearest saved training rows when the analysis fitted no tree;
- UMAP position: the inverse-distance weighted mean position of the ``neighbours`` nearest saved
  training rows, in the neighbour space HDBSCAN and UMAP saw — so a new track lands among the
  tracks it resembles and no old position changes.

Raw rows (what :func:`raw_rows` gathers and :func:`search_vectors` / :func:`place` take) are the
shard values the analysis gathered, in ``model.columns`` order, one row per track or per window:

- ``features``: the feature shards' numeric columns (``family__name``; ``features_chunks`` rows,
  one per classic chunk, with ``chunk_level``);
- ``embeddings``: the backend's ``embedding`` vector (one row per window for windowed CLAP);
- ``tags``: the backend's ``tag__*`` probabilities;
- several backends (an ensemble): each backend's vectors side by side, windows pooled first;
- ``both``: the features of the track followed by its embedding (per window: the track's
  features repeated on each of its window rows; the model pools after the embedding's centring,
  as the analysis does);
- ``tabular``: the tabular source's vector as written.

Window rows are pooled per track (mean, tracks sorted by id) where the analysis pools them:
before fusion for ``both``; for search after every step (:func:`search_vectors`); for the
k-means/HDBSCAN labels a track takes its windows' majority vote, for maps their mean.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import outdir, shards
from soundclust_ray.analysis import gather
from soundclust_ray.analysis.clustering import HdbscanTree, assign_hdbscan, vote_windows
from soundclust_ray.analysis.matrix import BACKEND_MATRICES, TABULAR_BACKEND, requested_backends
from soundclust_ray.analysis.scaling import column_family
from soundclust_ray.analysis.steps import (  # noqa: F401 - re-exported: the placement API
    STEP_KINDS,
    Step,
    apply_steps,
    centre_l2_steps,
    l2_step,
    pca_step,
    pool_rows,
    run_steps,
    standardize_step,
)
from soundclust_ray.config import PlacementConfig
from soundclust_ray.errors import UserError

ARRAYS = "placement.npz"
META = "placement.json"
TRACKS = "placement_tracks.parquet"


@dataclass
class PlacementModel:
    """Everything :func:`place` and :func:`search_vectors` need, in arrays and plain values."""

    steps: list[Step]
    """Raw rows → clustered rows (the optional PCA reduction included)."""
    centres: np.ndarray
    """(k, d) k-means centres in the clustered space."""
    train_X: np.ndarray
    """(m, d') seeded sample of training rows in the neighbour space (``neighbour_steps``)."""
    train_hdbscan: np.ndarray
    train_umap: np.ndarray
    """(m, 2) their UMAP positions (NaN when the run had no UMAP)."""
    pca_map: Step | None = None
    neighbours: int = PlacementConfig.neighbours
    columns: list[str] = field(default_factory=list)
    """Names of the raw columns, in order (see the module docstring)."""
    key: dict = field(default_factory=dict)
    """What the model was fitted on: matrix, backend, chunk_level, the analysis config,
    the fitted tracks' count and hash (compared with OUT by :func:`load_placement`)."""
    window_level: bool = False
    """Clustered rows are windows (each track votes / averages its windows)."""
    neighbour_steps: list[Step] = field(default_factory=list)
    """Clustered rows → the neighbour space HDBSCAN and UMAP were fitted in (a PCA, or none)."""
    hdbscan_tree: HdbscanTree | None = None


def fit_placement(
    steps: list[Step],
    X: np.ndarray,
    centres: np.ndarray,
    hdbscan: np.ndarray,
    umap_xy: np.ndarray,
    pca_map: Step | None,
    cfg: PlacementConfig,
    random_state: int,
    columns: list[str] | None = None,
    *,
    neighbour_steps: list[Step] | None = None,
    hdbscan_tree: HdbscanTree | None = None,
) -> PlacementModel:
    """A model from the clustered matrix ``X`` and what the analysis fitted on it."""
    rng = np.random.default_rng(random_state)
    n = len(X)
    rows = np.sort(rng.choice(n, min(n, cfg.map_sample), replace=False))
    neighbour_steps = list(neighbour_steps or [])
    return PlacementModel(
        steps,
        np.asarray(centres, np.float32),
        np.ascontiguousarray(apply_steps(neighbour_steps, X[rows]), np.float32),
        np.asarray(hdbscan)[rows].astype(np.int32),
        np.asarray(umap_xy, np.float32)[rows],
        pca_map,
        cfg.neighbours,
        list(columns or []),
        neighbour_steps=neighbour_steps,
        hdbscan_tree=hdbscan_tree,
    )


def place_rows(model: PlacementModel, Y: np.ndarray) -> dict[str, np.ndarray]:
    """kmeans, hdbscan, umap_x/y, pca_x/y of rows already in the clustered space."""
    import faiss

    Y = np.ascontiguousarray(Y, dtype=np.float32)
    d2 = (Y**2).sum(1)[:, None] - 2 * Y @ model.centres.T + (model.centres**2).sum(1)[None, :]
    result = {"kmeans": np.argmin(d2, axis=1).astype(np.int32)}
    Yn = np.ascontiguousarray(apply_steps(model.neighbour_steps, Y), dtype=np.float32)
    index = faiss.IndexFlatL2(Yn.shape[1])
    index.add(np.ascontiguousarray(model.train_X, dtype=np.float32))
    k = min(model.neighbours, len(model.train_X))
    dist2, rows = index.search(Yn, k)
    if model.hdbscan_tree is not None:
        result["hdbscan"] = assign_hdbscan(model.hdbscan_tree, Yn)[0].astype(np.int32)
    else:
        labels = model.train_hdbscan[rows]
        result["hdbscan"] = np.array([np.bincount(r + 1).argmax() - 1 for r in labels], np.int32)
    weights = 1.0 / (np.sqrt(np.maximum(dist2, 0)) + 1e-6)
    weights /= weights.sum(axis=1, keepdims=True)
    umap = (model.train_umap[rows] * weights[..., None]).sum(axis=1)
    result["umap_x"], result["umap_y"] = (
        umap[:, 0].astype(np.float32),
        umap[:, 1].astype(np.float32),
    )
    if model.pca_map is not None:
        xy = model.pca_map.apply(Y)
        if xy.shape[1] < 2:  # a one-column matrix has a one-axis map (projection.fit_pca_2d)
            xy = np.column_stack([xy, np.zeros(len(xy), np.float32)])
        result["pca_x"], result["pca_y"] = xy[:, 0], xy[:, 1]
    else:
        result["pca_x"] = result["pca_y"] = np.full(len(Y), np.nan, np.float32)
    return result


def place(
    model: PlacementModel, X_raw: np.ndarray, track_ids: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """kmeans, hdbscan, umap_x/y, pca_x/y of new raw rows (the model is not changed).

    With ``track_ids`` (one per raw row) the result is per track, ids sorted, under
    ``track_id``: window rows vote their labels and average their positions, as the analysis's
    ``per_track`` does; without, one result per row.
    """
    Y, ids = run_steps(model.steps, X_raw, track_ids)
    result = place_rows(model, Y)
    if ids is None:
        return result
    tracks, km = vote_windows(ids, result["kmeans"])
    per_track = {
        "track_id": tracks,
        "kmeans": km,
        "hdbscan": vote_windows(ids, result["hdbscan"])[1],
    }
    for name in ("umap", "pca"):
        xy = np.column_stack([result[f"{name}_x"], result[f"{name}_y"]])
        mean = pool_rows(xy, ids)[0]
        per_track[f"{name}_x"], per_track[f"{name}_y"] = mean[:, 0], mean[:, 1]
    return per_track


def search_vectors(
    model: PlacementModel, X_raw: np.ndarray, track_ids: np.ndarray | None = None
) -> np.ndarray:
    """Raw rows → the similar-track index's vectors (``search.clustered_matrix``'s geometry):
    the model's steps (scaling, weights, PCA), window rows mean-pooled per track, then L2.

    ``track_ids`` (one per raw row) pools window rows: the result then has one row per track,
    in sorted id order (``np.unique``); without it every row is taken as one track.
    """
    Y, ids = run_steps(model.steps, X_raw, track_ids)
    if ids is not None:
        Y = pool_rows(Y, ids)[0]
    return l2_step(0, Y.shape[1]).apply(Y)


# --- raw rows from OUT's shards (or from tables shaped like them) -------------------------------


def feature_product(key: dict) -> str:
    """The feature product a model's raw rows come from (``features_chunks`` with chunk_level)."""
    chunks = key.get("matrix") == "features" and (key.get("config") or {}).get("chunk_level")
    return outdir.FEATURE_CHUNKS if chunks else outdir.FEATURES


def feature_products(model: PlacementModel, out: str) -> list[str]:
    """The feature products (shard folders) a model's feature columns come from: one per
    family of its columns (``timbre__…`` → ``features/timbre``); ``features`` itself where OUT
    keeps its features there (an MSD run); ``features_chunks`` with chunk_level."""
    product = feature_product(model.key)
    if product != outdir.FEATURES or shards.list_shards(out, outdir.FEATURES):
        return [product]
    backends = set(backends_of(model.key))
    families = dict.fromkeys(column_family(c) for c in model.columns)
    return [outdir.feature_product(f) for f in families if f not in backends]


def backends_of(key: dict) -> list[str]:
    """The embedding backends a model's raw rows come from, in block order ([]: features)."""
    if key.get("matrix") == "tabular":
        return [TABULAR_BACKEND]
    if key.get("matrix") not in BACKEND_MATRICES:
        return []
    return requested_backends(key.get("backend"))


def backend_view(key: dict, g: gather.Gathered, backend: str) -> gather.Gathered:
    """One backend's gathered rows as the model's matrix reads them (``tags``: its tags)."""
    return gather.tags_view(g, backend) if key.get("matrix") == "tags" else g


def _select_columns(g: gather.Gathered, wanted: list[str], what: str) -> gather.Gathered:
    """``g`` with exactly the ``wanted`` columns, in order; UserError naming what is missing."""
    if g.columns == wanted:
        return g
    position = {c: i for i, c in enumerate(g.columns)}
    missing = [c for c in wanted if c not in position]
    if missing:
        raise UserError(
            f"the saved placement model was fitted on {len(wanted)} {what} columns and OUT's "
            f"shards lack {len(missing)} of them ({', '.join(missing[:3])}…): the run's "
            "configuration changed since the analysis; run `soundclust analyze` to refit"
        )
    g.X = np.ascontiguousarray(g.X[:, [position[c] for c in wanted]])
    g.columns = list(wanted)
    return g


def keep_tracks(g: gather.Gathered, track_ids) -> gather.Gathered:
    """The rows of ``g`` whose track is one of ``track_ids`` (all rows when None)."""
    if track_ids is None:
        return g
    keep = np.isin(g.track_ids.astype(str), np.asarray(list(track_ids), dtype=str))
    window = None if g.window_index is None else g.window_index[keep]
    tags = None if g.tags is None else g.tags[keep].reset_index(drop=True)
    return gather.Gathered(g.track_ids[keep], g.X[keep], g.columns, window, tags, g.notes)


def _features_beside_windows(f: gather.Gathered, e: gather.Gathered) -> gather.Gathered:
    """Each window row of ``e`` preceded by its track's (pooled) features, common tracks only."""
    f = gather.pool_windows(f)
    f_ids, e_ids = f.track_ids.astype(str), e.track_ids.astype(str)
    rows = np.flatnonzero(np.isin(e_ids, f_ids))
    at = np.searchsorted(f_ids, e_ids[rows])
    X = np.concatenate([f.X[at], e.X[rows]], axis=1)
    return gather.Gathered(
        e.track_ids[rows], X, f.columns + e.columns, e.window_index[rows], None, []
    )


def assemble_raw(
    model: PlacementModel,
    features: gather.Gathered | None,
    embeddings: gather.Gathered | None,
    track_ids=None,
) -> gather.Gathered:
    """The model's raw rows from gathered features and/or embeddings (of its product(s))."""
    matrix, n_emb = model.key["matrix"], 0
    if embeddings is not None:
        n_emb = embeddings.X.shape[1]
        n_feat = len(model.columns) - n_emb
        embeddings = _select_columns(embeddings, model.columns[n_feat:], "embedding")
    if features is not None:
        features = _select_columns(features, model.columns[: len(model.columns) - n_emb], "feature")
    if matrix == "both" and embeddings.chunk_level:
        g = _features_beside_windows(features, embeddings)
    elif matrix == "both":
        g = gather.join_on_tracks(gather.pool_windows(features), embeddings)
    else:
        g = features if features is not None else embeddings
    return keep_tracks(g, track_ids)


def raw_rows(out: str, model: PlacementModel, track_ids=None) -> gather.Gathered:
    """The raw rows of ``model`` read from OUT's shards (all tracks, or those of ``track_ids``):
    ``track_ids`` (sorted; one per row, repeated for windows), ``X`` in ``model.columns`` order,
    ``window_index`` for window rows."""
    key = model.key
    features = embeddings = None
    try:
        if key["matrix"] in ("features", "both"):
            products = feature_products(model, out)
            if products == [outdir.FEATURE_CHUNKS]:
                features = gather.gather_features(out, product=outdir.FEATURE_CHUNKS)
            else:
                features = gather.gather_features(out, products=products)
        views = [backend_view(key, gather.gather_embeddings(out, b), b) for b in backends_of(key)]
    except FileNotFoundError as exc:
        raise UserError(f"the saved placement model's matrix is not in OUT: {exc}") from exc
    if views:
        embeddings = gather.join_backends(views)
    return assemble_raw(model, features, embeddings, track_ids)


def _sorted_gathered(
    table: pa.Table, X: np.ndarray, columns: list[str], tags: pd.DataFrame | None = None
) -> gather.Gathered:
    """A shard-shaped table's rows (``X`` and ``tags`` row-aligned with it) sorted by track id
    and window, as gathering sorts them."""
    ids = np.asarray(table.column("track_id").to_pylist()).astype(str)
    window_col = next((c for c in gather.WINDOW_COLUMNS if c in table.column_names), None)
    window = None
    if window_col:
        window = np.asarray(table.column(window_col).to_pylist(), dtype=np.int32)
        order = np.lexsort((window, ids))
        window = window[order]
    else:
        order = np.argsort(ids, kind="stable")
    if tags is not None:
        tags = tags.iloc[order].reset_index(drop=True)
    return gather.Gathered(ids[order].astype(object), X[order], columns, window, tags, [])


def _table_view(key: dict, table: pa.Table, backend: str) -> gather.Gathered:
    """An embed stage's output table of one backend as the model's matrix reads it."""
    X = shards.embedding_matrix(table.column(shards.EMBEDDING_COLUMN))
    columns = [f"{backend}__emb_{i:03d}" for i in range(X.shape[1])]
    if key.get("matrix") != "tags":
        return _sorted_gathered(table, X, columns)
    tag_cols = [c for c in table.column_names if c.startswith(gather.TAG_PREFIX)]
    tags = pd.DataFrame(
        {
            c[len(gather.TAG_PREFIX) :]: table.column(c).to_numpy(zero_copy_only=False)
            for c in tag_cols
        }
    )
    return gather.tags_view(_sorted_gathered(table, X, columns, tags), backend)


def raw_rows_from_tables(
    model: PlacementModel,
    features: pa.Table | None = None,
    embeddings: pa.Table | Mapping[str, pa.Table] | None = None,
) -> gather.Gathered:
    """The model's raw rows from in-memory tables shaped like the shards the run writes (a
    features stage's output: track_id [, chunk_index] and the feature columns; an embed stage's:
    track_id [, window_index], ``embedding`` [, ``tag__*``], one table per backend, keyed by
    backend, or a single table for a one-backend model), e.g. for a query file computed on the
    fly. A table the model's matrix does not use is ignored; a missing column is a UserError."""
    f = e = None
    backends = backends_of(model.key)
    if isinstance(embeddings, pa.Table):
        embeddings = dict.fromkeys(backends[:1], embeddings)
    if embeddings is not None and backends:
        absent = [b for b in backends if b not in embeddings]
        if absent:
            raise UserError(f"no rows of embeddings/{absent[0]} for the placement model")
        e = gather.join_backends([_table_view(model.key, embeddings[b], b) for b in backends])
    if features is not None and model.key.get("matrix") in ("features", "both"):
        n_feat = len(model.columns) - (0 if e is None else e.X.shape[1])
        names = [c for c in model.columns[:n_feat] if c in features.column_names]
        X = np.empty((features.num_rows, len(names)), np.float32)
        for j, name in enumerate(names):
            X[:, j] = features.column(name).to_numpy(zero_copy_only=False)
        f = _sorted_gathered(features, X, names)
    return assemble_raw(model, f, e)


# --- saved in OUT/fitted/ ------------------------------------------------------------------------


def tracks_digest(track_ids: np.ndarray) -> str:
    """A hash of a set of track ids (order-free)."""
    text = "\n".join(sorted(np.unique(np.asarray(track_ids).astype(str)).tolist()))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


TREE_ARRAYS = (
    "points",
    "core_distances",
    "point_parent",
    "point_lambda",
    "cluster_parent",
    "cluster_lambda",
    "cluster_label",
    "cluster_max_lambda",
)
"""The array fields of ``clustering.HdbscanTree`` (root and min_samples go to the JSON)."""


def _pack(steps: list[Step], prefix: str, arrays: dict) -> list[dict]:
    """Steps as JSON specs, their arrays into ``arrays`` under ``<prefix><i>_a|b``."""
    specs = []
    for i, step in enumerate(steps):
        for name in ("a", "b"):
            value = getattr(step, name)
            if value is not None:
                arrays[f"{prefix}{i}_{name}"] = value
        specs.append({"kind": step.kind, "columns": step.columns})
    return specs


def _unpack(specs: list[dict], prefix: str, arrays) -> list[Step]:
    steps = []
    for i, spec in enumerate(specs):
        if spec["kind"] not in STEP_KINDS:
            raise ValueError(f"unknown placement step {spec['kind']!r} in {META}")
        a, b = (arrays.get(f"{prefix}{i}_{n}") for n in "ab")
        columns = tuple(spec["columns"]) if spec["columns"] else None
        steps.append(Step(spec["kind"], a, b, columns))
    return steps


def save_placement(out: str, model: PlacementModel, track_ids: np.ndarray | None = None) -> None:
    """OUT/fitted/placement.npz (arrays), placement_tracks.parquet (the fitted tracks) and
    placement.json (what they are) — the JSON last: a save killed half way is never trusted."""
    arrays = {
        "centres": model.centres,
        "train_X": model.train_X,
        "train_hdbscan": model.train_hdbscan,
        "train_umap": model.train_umap,
    }
    tree = model.hdbscan_tree
    if tree is not None:
        arrays.update({f"hdbscan_{name}": getattr(tree, name) for name in TREE_ARRAYS})
    meta = {
        "steps": _pack(model.steps, "step", arrays),
        "pca_map": _pack([model.pca_map], "map", arrays)[0] if model.pca_map else None,
        "neighbour_steps": _pack(model.neighbour_steps, "neighbour", arrays),
        "hdbscan_tree": None
        if tree is None
        else {"root": tree.root, "min_samples": tree.min_samples},
        "neighbours": model.neighbours,
        "window_level": model.window_level,
        "key": dict(model.key),
        "columns": model.columns,
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    outdir.write_bytes(out, outdir.fitted_file(ARRAYS), buf.getvalue())
    if track_ids is not None:
        ids = np.unique(np.asarray(track_ids).astype(str))
        outdir.write_table(out, outdir.fitted_file(TRACKS), pa.table({"track_id": ids}))
        meta["key"].update(n_tracks=int(len(ids)), tracks_sha=tracks_digest(ids))
    outdir.write_json(out, outdir.fitted_file(META), meta)


def _read_model(out: str) -> PlacementModel | None:
    meta = outdir.read_json(out, outdir.fitted_file(META))
    data = outdir.read_bytes(out, outdir.fitted_file(ARRAYS))
    if not meta or data is None:
        return None
    arrays = np.load(io.BytesIO(data), allow_pickle=False)
    tree = None
    if meta.get("hdbscan_tree"):
        fields = {name: arrays[f"hdbscan_{name}"] for name in TREE_ARRAYS}
        tree = HdbscanTree(**fields, **meta["hdbscan_tree"])
    return PlacementModel(
        _unpack(meta["steps"], "step", arrays),
        arrays["centres"],
        arrays["train_X"],
        arrays["train_hdbscan"],
        arrays["train_umap"],
        _unpack([meta["pca_map"]], "map", arrays)[0] if meta["pca_map"] else None,
        int(meta["neighbours"]),
        list(meta.get("columns", [])),
        dict(meta.get("key") or {}),
        bool(meta.get("window_level", False)),
        _unpack(meta.get("neighbour_steps") or [], "neighbour", arrays),
        tree,
    )


def analysis_key(config: dict, matrix_info: dict) -> dict:
    """What identifies an analysis's matrix: its config (JSON form) and resolved matrix."""
    plain = json.loads(json.dumps(config, default=str))
    return {
        "config": plain,
        "matrix": matrix_info.get("matrix"),
        "backend": matrix_info.get("backend"),
    }


def mismatch(model: PlacementModel, metrics: dict) -> str | None:
    """Why ``model`` is not the model of the analysis that wrote ``metrics`` (None: it is)."""
    if not metrics:
        return "OUT has no metrics.json (no finished analysis)"
    now = analysis_key(metrics.get("config") or {}, metrics.get("matrix") or {})
    saved = {name: model.key.get(name) for name in now}
    if now == saved:
        return None
    if (now["matrix"], now["backend"]) != (saved["matrix"], saved["backend"]):
        return (
            f"the saved placement model is of matrix {saved['matrix']}"
            f"{'/' + saved['backend'] if saved['backend'] else ''} but OUT's last analysis "
            f"clustered {now['matrix']}{'/' + now['backend'] if now['backend'] else ''}"
        )
    changed = sorted(k for k in now["config"] if now["config"][k] != saved["config"].get(k))
    return f"OUT's last analysis used other options than the saved model ({', '.join(changed)})"


def load_placement(out: str, check: bool = True) -> PlacementModel | None:
    """The saved model, or None when OUT has none; with ``check``, a UserError when it is not
    the model of OUT's last analysis (another matrix, backend or analysis options) — placing
    with it would mix two geometries."""
    model = _read_model(out)
    if model is None or not check:
        return model
    why = mismatch(model, outdir.read_json(out, outdir.METRICS))
    if why:
        raise UserError(f"{out}: {why}; run `soundclust analyze {out}` to refit")
    return model


def fitted_tracks(out: str) -> np.ndarray | None:
    """Sorted ids of the tracks the saved model was fitted on (None when not saved)."""
    table = outdir.read_table(out, outdir.fitted_file(TRACKS))
    return None if table is None else np.asarray(table.column("track_id").to_pylist(), object)


def describe(model: PlacementModel) -> str:
    """One JSON line of what the model holds (for logs and the CLI)."""
    return json.dumps(
        {
            "matrix": model.key.get("matrix"),
            "backend": model.key.get("backend"),
            "steps": [s.kind for s in model.steps],
            "k": len(model.centres),
            "map_rows": len(model.train_X),
            "neighbours": model.neighbours,
        }
    )
