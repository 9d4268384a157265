"""Stream Parquet shards back into one float32 matrix in track_id order.

The driver never concatenates per-shard frames: a first pass reads only the key columns
(track_id [+ window/chunk index]) to fix every row's final position, a second pass copies each
shard's values straight into a preallocated matrix. Peak memory is the matrix plus one shard.
Rows repeated across shards (a resumed run that wrote a track twice) keep their first copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from soundclust_ray import outdir, shards

WINDOW_COLUMNS = ("window_index", "chunk_index")
"""Key columns that mark chunk-level rows (one row per window of a track)."""
TAG_PREFIX = "tag__"
NON_VALUE_COLUMNS = {"track_id", "path", "error_stage", "error_type", "error_message", "node_id"}


@dataclass
class Gathered:
    """A gathered matrix and what its rows and columns are."""

    track_ids: np.ndarray
    """(n,) object array of track ids, sorted (with window_index for chunk-level rows)."""
    X: np.ndarray
    """(n, d) float32."""
    columns: list[str]
    """Column names (``family__name``; ``<backend>__emb_000`` for embeddings)."""
    window_index: np.ndarray | None = None
    """(n,) int32 window of each row for chunk-level shards, else None."""
    tags: pd.DataFrame | None = None
    """``tag__*`` probabilities per row (embeddings shards that carry them)."""
    notes: list[str] = field(default_factory=list)
    steps: list = field(default_factory=list)
    """The fitted ``steps.Step`` s that made ``X`` from the shards' raw values (matrix.py)."""

    @property
    def chunk_level(self) -> bool:
        return self.window_index is not None


def _shard_schema(path: str, fs) -> pa.Schema:
    with fs.open_input_file(path) as f:
        return pq.read_schema(f)


def _is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)


def _value_columns(schema: pa.Schema, prefixes: tuple[str, ...] | None) -> list[str]:
    names = []
    for f in schema:
        if f.name in NON_VALUE_COLUMNS or f.name in WINDOW_COLUMNS:
            continue
        if f.name.startswith(TAG_PREFIX) or f.name == shards.EMBEDDING_COLUMN:
            continue
        if not _is_float(f.type):
            continue
        if prefixes is not None and not f.name.startswith(prefixes):
            continue
        names.append(f.name)
    return names


def _plan_rows(
    paths: list[str], fs, window_col: str | None
) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray], list[np.ndarray]]:
    """Sorted unique keys, and per shard (source rows kept, destination rows)."""
    ids_per_shard, win_per_shard = [], []
    for path in paths:
        cols = ["track_id"] + ([window_col] if window_col else [])
        t = pq.read_table(path, filesystem=fs, columns=cols)
        ids_per_shard.append(t.column("track_id").to_numpy(zero_copy_only=False).astype(object))
        if window_col:
            win_per_shard.append(
                t.column(window_col).to_numpy(zero_copy_only=False).astype(np.int64)
            )
    lengths = [len(a) for a in ids_per_shard]
    all_ids = np.concatenate(ids_per_shard) if ids_per_shard else np.empty(0, dtype=object)
    all_ids = all_ids.astype(str)
    if window_col:
        all_win = np.concatenate(win_per_shard) if win_per_shard else np.empty(0, dtype=np.int64)
        order = np.lexsort((all_win, all_ids))
        keys_sorted = np.rec.fromarrays([all_ids[order], all_win[order]])
        first = np.ones(len(order), dtype=bool)
        if len(order):
            first[1:] = (keys_sorted.f0[1:] != keys_sorted.f0[:-1]) | (
                keys_sorted.f1[1:] != keys_sorted.f1[:-1]
            )
    else:
        all_win = None
        order = np.argsort(all_ids, kind="stable")
        sorted_ids = all_ids[order]
        first = np.ones(len(order), dtype=bool)
        if len(order):
            first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    kept_global = order[first]
    dest = np.full(len(all_ids), -1, dtype=np.int64)
    dest[kept_global] = np.arange(len(kept_global))
    src_rows, dst_rows, start = [], [], 0
    for n in lengths:
        d = dest[start : start + n]
        keep = np.flatnonzero(d >= 0)
        src_rows.append(keep)
        dst_rows.append(d[keep])
        start += n
    track_ids = all_ids[kept_global].astype(object)
    window = all_win[kept_global].astype(np.int32) if all_win is not None else None
    return track_ids, window, src_rows, dst_rows


def _window_col(schema: pa.Schema) -> str | None:
    return next((c for c in WINDOW_COLUMNS if c in schema.names), None)


def _fill_matrix(
    paths: list[str],
    fs,
    n_rows: int,
    src_rows: list[np.ndarray],
    dst_rows: list[np.ndarray],
    read_block,
    d: int,
    progress: bool,
    desc: str,
) -> np.ndarray:
    from tqdm.auto import tqdm

    X = np.empty((n_rows, d), dtype=np.float32)
    for path, src, dst in tqdm(
        list(zip(paths, src_rows, dst_rows, strict=True)),
        desc=desc,
        disable=not progress,
        leave=False,
    ):
        if len(src) == 0:
            continue
        block = read_block(path, fs)
        X[dst] = block[src]
    return X


def feature_products(out: str) -> list[str]:
    """The feature products the analysis reads: the families OUT's last run asked for
    (run.json's ``--features``) that have shards, else every feature product in OUT (an
    embedding-only run after a features run; an OUT without run.json). A family another run
    computed stays in OUT for a later run that asks for it, outside this matrix."""
    present = shards.feature_products(out)
    config = outdir.read_json(out, outdir.RUN).get("config") or {}
    asked = [outdir.feature_product(f) for f in (config.get("features") or {}).get("families", [])]
    chosen = [p for p in asked if p in present]
    return chosen or present


def gather_features(
    out: str,
    prefixes: tuple[str, ...] | None = None,
    progress: bool = False,
    product: str = outdir.FEATURES,
    products: list[str] | None = None,
) -> Gathered:
    """The feature products of OUT (``products``, default :func:`feature_products`: one per
    family) joined on track_id → Gathered (columns whose names start with ``prefixes``, or
    all); a track must be in every family. ``product`` names one product instead, e.g.
    ``features_chunks`` for the ``--chunk-level`` rows (one per classic chunk).
    """
    if product != outdir.FEATURES:
        return gather_product(out, product, prefixes, progress)
    products = products or feature_products(out)
    if not products:
        raise FileNotFoundError(f"no feature shards under {shards.join(out, product)}")
    parts = [gather_product(out, p, prefixes, progress) for p in products]
    g = parts[0]
    for part in parts[1:]:
        g = join_on_tracks(g, part, "feature families")
    return g


def gather_product(
    out: str, product: str, prefixes: tuple[str, ...] | None = None, progress: bool = False
) -> Gathered:
    """One feature product's shards → Gathered (columns whose names start with ``prefixes``).

    Columns are the intersection over shards (a shard missing a column cannot fill it); dropped
    columns are listed in ``notes``.
    """
    fs, _ = shards.resolve(out)
    paths = shards.list_shards(out, product)
    if not paths:
        raise FileNotFoundError(f"no feature shards under {shards.join(out, product)}")
    schemas = [_shard_schema(p, fs) for p in paths]
    first = _value_columns(schemas[0], prefixes)
    common = set(first)
    for s in schemas[1:]:
        common &= set(_value_columns(s, prefixes))
    columns = [c for c in first if c in common]
    notes = []
    dropped = sorted(set().union(*[set(_value_columns(s, prefixes)) for s in schemas]) - common)
    if dropped:
        notes.append(f"{len(dropped)} feature columns missing from some shards were dropped")
    if not columns:
        raise ValueError(
            "no numeric feature columns found"
            + (f" with prefix {', '.join(prefixes)}" if prefixes else "")
        )
    window_col = _window_col(schemas[0])
    track_ids, window, src_rows, dst_rows = _plan_rows(paths, fs, window_col)

    def read_block(path, fs):
        t = pq.read_table(path, filesystem=fs, columns=columns)
        return np.column_stack(
            [t.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in columns]
        )

    X = _fill_matrix(
        paths,
        fs,
        len(track_ids),
        src_rows,
        dst_rows,
        read_block,
        len(columns),
        progress,
        "features",
    )
    return Gathered(track_ids, X, columns, window, None, notes)


def backend_has_tags(out: str, backend: str) -> bool:
    """Whether OUT/embeddings/<backend>'s shards carry ``tag__*`` columns (schema only)."""
    paths = shards.list_shards(out, outdir.embeddings_product(backend))
    if not paths:
        return False
    fs, _ = shards.resolve(out)
    return any(name.startswith(TAG_PREFIX) for name in _shard_schema(paths[0], fs).names)


def embedding_backends(out: str) -> list[str]:
    """Backends with at least one shard under OUT/embeddings/, sorted."""
    fs, base = shards.resolve(out)
    folder = shards.join(base, outdir.EMBEDDINGS)
    import pyarrow.fs as pafs

    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=False))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
    return [b for b in names if shards.list_shards(out, outdir.embeddings_product(b))]


def gather_embeddings(out: str, backend: str, progress: bool = False) -> Gathered:
    """OUT/embeddings/<backend> shards → Gathered, with ``tag__*`` columns as ``tags``."""
    fs, _ = shards.resolve(out)
    product = outdir.embeddings_product(backend)
    paths = shards.list_shards(out, product)
    if not paths:
        raise FileNotFoundError(f"no embedding shards under {shards.join(out, product)}")
    schema = _shard_schema(paths[0], fs)
    if shards.EMBEDDING_COLUMN not in schema.names:
        raise ValueError(f"{product} shards have no '{shards.EMBEDDING_COLUMN}' column")
    emb_type = schema.field(shards.EMBEDDING_COLUMN).type
    d = emb_type.list_size
    tag_cols = [c for c in schema.names if c.startswith(TAG_PREFIX)]
    window_col = _window_col(schema)
    track_ids, window, src_rows, dst_rows = _plan_rows(paths, fs, window_col)

    def read_block(path, fs):
        t = pq.read_table(path, filesystem=fs, columns=[shards.EMBEDDING_COLUMN])
        return shards.embedding_matrix(t.column(shards.EMBEDDING_COLUMN))

    X = _fill_matrix(
        paths, fs, len(track_ids), src_rows, dst_rows, read_block, d, progress, backend
    )
    tags = None
    if tag_cols:
        tag_values = np.full((len(track_ids), len(tag_cols)), np.nan, dtype=np.float32)
        for path, src, dst in zip(paths, src_rows, dst_rows, strict=True):
            t = pq.read_table(path, filesystem=fs, columns=tag_cols)
            if not set(tag_cols) <= set(t.column_names) or len(src) == 0:
                continue
            block = np.column_stack(
                [t.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in tag_cols]
            )
            tag_values[dst] = block[src]
        tags = pd.DataFrame(tag_values, columns=[c[len(TAG_PREFIX) :] for c in tag_cols])
    columns = [f"{backend}__emb_{i:03d}" for i in range(d)]
    return Gathered(track_ids, X, columns, window, tags, [])


def tags_view(g: Gathered, backend: str) -> Gathered:
    """``g``'s tag probabilities (``tag__*``) as its matrix, columns ``<backend>__tag_<name>``.

    Raises:
        ValueError: the backend wrote no tags (musicnn does, CLAP does not).
    """
    if g.tags is None:
        raise ValueError(f"embeddings/{backend} has no tag columns (musicnn writes them, CLAP not)")
    X = g.tags.to_numpy(dtype=np.float32, copy=True)
    columns = [f"{backend}__tag_{name}" for name in g.tags.columns]
    return Gathered(g.track_ids, X, columns, g.window_index, g.tags, list(g.notes))


def join_backends(views: list[Gathered]) -> Gathered:
    """One backend's view as is; several side by side, windows pooled, common tracks only
    (an ensemble: each backend's columns stay contiguous, one fusion block each)."""
    if len(views) == 1:
        return views[0]
    joined = pool_windows(views[0])
    for view in views[1:]:
        joined = join_on_tracks(joined, pool_windows(view), "the ensemble's backends")
    return joined


def join_on_tracks(a: Gathered, b: Gathered, what: str = "features/embeddings") -> Gathered:
    """Columns of ``a`` and ``b`` side by side for the tracks present in both (track level)."""
    if a.chunk_level or b.chunk_level:
        raise ValueError("join_on_tracks needs track-level matrices; pool windows first")
    common, ia, ib = np.intersect1d(
        a.track_ids.astype(str), b.track_ids.astype(str), assume_unique=True, return_indices=True
    )
    notes = a.notes + b.notes
    dropped = len(a.track_ids) + len(b.track_ids) - 2 * len(common)
    if dropped:
        notes.append(f"{dropped} rows present in only one of {what} were dropped")
    X = np.empty((len(common), a.X.shape[1] + b.X.shape[1]), dtype=np.float32)
    X[:, : a.X.shape[1]] = a.X[ia]
    X[:, a.X.shape[1] :] = b.X[ib]
    tags = b.tags.iloc[ib].reset_index(drop=True) if b.tags is not None else a.tags
    return Gathered(common.astype(object), X, a.columns + b.columns, None, tags, notes)


def pool_windows(g: Gathered) -> Gathered:
    """Mean of each track's window rows (track-level view of chunk-level shards)."""
    if not g.chunk_level:
        return g
    ids, inverse = np.unique(g.track_ids.astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    X = np.zeros((len(ids), g.X.shape[1]), dtype=np.float64)
    np.add.at(X, inverse, g.X)
    X = (X / counts[:, None]).astype(np.float32)
    tags = None
    if g.tags is not None:
        tags = g.tags.groupby(inverse).mean().reset_index(drop=True)
    notes = g.notes + [f"{len(g.track_ids)} windows mean-pooled into {len(ids)} tracks"]
    return Gathered(ids.astype(object), X, g.columns, None, tags, notes)


BOOKKEEPING_COLUMNS = ("source_id",)
"""Manifest columns soundclust adds for resume (a file's identity), not the user's metadata."""


def read_manifest(out: str) -> pd.DataFrame:
    """OUT/manifest.parquet as a frame of track_id, path and the user's metadata columns
    (empty frame with track_id/path when missing)."""
    table = outdir.read_table(out, outdir.MANIFEST)
    if table is None:
        return pd.DataFrame({"track_id": pd.Series(dtype=str), "path": pd.Series(dtype=str)})
    keep = [c for c in table.column_names if c not in BOOKKEEPING_COLUMNS]
    df = table.select(keep).to_pandas()
    df["track_id"] = df["track_id"].astype(str)
    return df.drop_duplicates("track_id").reset_index(drop=True)
