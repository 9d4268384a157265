"""Out-of-fold k-means features (seed 004): each row is described by a model that never saw it.

The seed splits the rows with a shuffled, seeded KFold; for each split it fits a StandardScaler and
a MiniBatchKMeans on the training folds only, then writes the held-out fold's distances to the k
centroids and its predicted labels. The result can feed a downstream model without leakage.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.model_selection import KFold

from soundclust_ray import shards
from soundclust_ray.analysis.scaling import apply_scaling_inplace, standardize_inplace
from soundclust_ray.config import RANDOM_STATE, MsdConfig, RunConfig

_MSD = MsdConfig()
OOF_DIR = "oof"
FEATURES = "features"


def fit_oof_kmeans(
    X: np.ndarray,
    k: int = _MSD.oof_k,
    n_splits: int = _MSD.oof_splits,
    random_state: int = RANDOM_STATE,
    minibatch: bool = True,
    batch_size: int = _MSD.oof_batch_size,
    n_init: int | str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (distances (n, k) float32, labels (n,) int32) of k-means, as seed 004.

    ``minibatch=False`` uses full KMeans (same seeding) for small matrices. Raises ValueError when
    there are fewer rows than splits, fewer than 2 splits, or fewer training rows than clusters,
    instead of letting scikit-learn fail deep inside a fold.
    """
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d matrix, got shape {X.shape}")
    n = X.shape[0]
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    if n < n_splits:
        raise ValueError(f"out-of-fold k-means needs at least n_splits={n_splits} rows, got {n}")
    smallest_train = n - -(-n // n_splits)  # KFold's largest test fold has ceil(n / n_splits) rows
    if k < 1 or k > smallest_train:
        raise ValueError(
            f"k={k} clusters need at least k training rows per fold; with {n} rows and "
            f"{n_splits} splits the smallest training fold has {smallest_train}"
        )
    dist = np.zeros((n, k), dtype=np.float32)
    labels = np.zeros(n, dtype=np.int32)
    kf = KFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    for tr, va in kf.split(X):
        # One copy of the training rows, standardized in place in blocks: StandardScaler's
        # fit + transform would hold two more (one float64) and triple the memory at 1M rows.
        z_tr = X[tr]
        stats = standardize_inplace(z_tr)
        z_va = apply_scaling_inplace(X[va], stats["mean"], stats["scale"])
        if minibatch:
            km = MiniBatchKMeans(
                n_clusters=k, random_state=random_state, batch_size=batch_size, n_init=n_init
            )
        else:
            km = KMeans(n_clusters=k, random_state=random_state, n_init=n_init)
        km.fit(z_tr)
        dist[va] = km.transform(z_va)
        labels[va] = km.predict(z_va)
    return dist, labels


def msd_oof_tables(features: pd.DataFrame, cfg: RunConfig) -> dict[str, pd.DataFrame]:
    """Seed 004's per-field out-of-fold clustering of MSD statistics.

    ``features`` holds ``track_id`` and the ``msd_<field>__*`` columns (error rows, i.e. rows with
    a NaN statistic, are dropped). Rows are ordered by ``track_id`` so two runs agree. Returns
    {field: DataFrame(track_id, dist_00…, label)}. With fewer rows than the seed's 5 splits or
    k=32 clusters, splits and k are clamped (recorded in each frame's ``attrs``); fewer than 2
    rows give an empty dict, since no fold can be held out.
    """
    from soundclust_ray.sources.msd import field_columns

    msd = cfg.msd
    tables: dict[str, pd.DataFrame] = {}
    for name in msd.fields:
        cols = field_columns(name, msd.hist_bins)
        missing = [c for c in cols if c not in features.columns]
        if missing:
            raise ValueError(f"features lack the MSD columns of field {name!r} ({missing[0]}, …)")
        frame = features[["track_id", *cols]].dropna().sort_values("track_id", kind="stable")
        n = len(frame)
        if n < 2:
            return {}
        n_splits = min(msd.oof_splits, n)
        k = min(msd.oof_k, n - -(-n // n_splits))
        dist, labels = fit_oof_kmeans(
            frame[cols].to_numpy(dtype=np.float64),
            k=k,
            n_splits=n_splits,
            random_state=cfg.random_state,
            batch_size=msd.oof_batch_size,
        )
        table = pd.DataFrame(dist, columns=[f"dist_{i:02d}" for i in range(k)])
        table.insert(0, "track_id", frame["track_id"].astype(str).to_numpy())
        table["label"] = labels
        table.attrs.update(k=k, n_splits=n_splits)
        tables[name] = table
    return tables


def write_msd_oof(
    out: str, tables: dict[str, pd.DataFrame], config_hash: str | None = None
) -> list[str]:
    """Write each field's table atomically to ``OUT/oof/<field>.parquet``; returns the paths."""
    fs, base = shards.resolve(out)
    paths = []
    for name, table in tables.items():
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        meta = {b"soundclust.oof": json.dumps(table.attrs).encode()}
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **meta})
        path = shards.join(base, OOF_DIR, f"{name}.parquet")
        shards.write_table_atomic(fs, path, arrow, config_hash)
        paths.append(path)
    return paths


def run_msd_oof(out: str, cfg: RunConfig, config_hash: str | None = None) -> list[str]:
    """Read the MSD statistics from ``OUT/features`` shards and write ``OUT/oof/<field>.parquet``.

    Reads only ``track_id`` and the ``msd_*`` columns, shard by shard.
    """
    from soundclust_ray.sources.msd import msd_columns

    columns = ["track_id", *msd_columns(cfg.msd)]
    parts = [t.to_pandas() for t in shards.iter_shard_tables(out, FEATURES, columns)]
    if not parts:
        raise ValueError(f"no feature shards under {shards.join(out, FEATURES)}")
    return write_msd_oof(out, msd_oof_tables(pd.concat(parts, ignore_index=True), cfg), config_hash)
