"""Out-of-fold k-means features (seed 004): each row is described by a model that never saw it.

The seed splits the rows with a shuffled, seeded KFold; for each split it fits a StandardScaler and
a MiniBatchKMeans on the training folds only, then writes the held-out fold's distances to the k
centroids and its predicted labels. The result can feed a downstream model without leakage.

Pure functions on arrays: reading shards and writing OUT is the caller's (the driver for
OUT/oof.parquet, ``sources/msd_post.py`` for MSD's per-field tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.model_selection import KFold

from soundclust_ray.analysis.executor import SERIAL, Executor
from soundclust_ray.analysis.scaling import apply_scaling_inplace, standardize_inplace
from soundclust_ray.config import MINIBATCH_N_INIT, AnalysisConfig, MsdConfig


@dataclass(frozen=True)
class OofParams:
    """What one out-of-fold clustering fits; built from a config by ``for_analysis``/``for_msd``."""

    k: int
    n_splits: int
    batch_size: int
    random_state: int
    minibatch: bool = True
    """False: full KMeans (same seeding) for small matrices."""
    n_init: int | str = MINIBATCH_N_INIT

    @classmethod
    def for_analysis(cls, cfg: AnalysisConfig, k: int) -> OofParams:
        """The driver's OUT/oof.parquet: the chosen k, the analysis splits and batch size."""
        return cls(k, cfg.oof_splits, cfg.minibatch_size, cfg.random_state)

    @classmethod
    def for_msd(cls, msd: MsdConfig, random_state: int) -> OofParams:
        """Seed 004's per-field clustering of MSD statistics."""
        return cls(msd.oof_k, msd.oof_splits, msd.oof_batch_size, random_state)


def dist_columns(k: int) -> list[str]:
    """Names of the distance columns of an out-of-fold table: dist_00, dist_01, …"""
    return [f"dist_{j:02d}" for j in range(k)]


def check_oof_shape(n: int, p: OofParams) -> None:
    """ValueError when KFold or k-means would fail deep inside a fold, with the reason."""
    if p.n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {p.n_splits}")
    if n < p.n_splits:
        raise ValueError(f"out-of-fold k-means needs at least n_splits={p.n_splits} rows, got {n}")
    smallest_train = n - -(-n // p.n_splits)  # KFold's largest test fold has ceil(n / splits)
    if p.k < 1 or p.k > smallest_train:
        raise ValueError(
            f"k={p.k} clusters need at least k training rows per fold; with {n} rows and "
            f"{p.n_splits} splits the smallest training fold has {smallest_train}"
        )


def fit_oof_fold(
    X: np.ndarray, fold: tuple[np.ndarray, np.ndarray], p: OofParams
) -> tuple[np.ndarray, np.ndarray]:
    """(distances, labels) of the held-out rows ``fold[1]`` by a model fitted on ``fold[0]``.

    One copy of the training rows, standardized in place in blocks: StandardScaler's fit +
    transform would hold two more (one float64) and triple the memory at 1M rows.
    """
    train, held_out = fold
    z_tr = X[train]
    stats = standardize_inplace(z_tr)
    z_va = apply_scaling_inplace(X[held_out], stats["mean"], stats["scale"])
    if p.minibatch:
        km = MiniBatchKMeans(
            n_clusters=p.k, random_state=p.random_state, batch_size=p.batch_size, n_init=p.n_init
        )
    else:
        km = KMeans(n_clusters=p.k, random_state=p.random_state, n_init=p.n_init)
    km.fit(z_tr)
    return km.transform(z_va), km.predict(z_va)


def fit_oof_kmeans(
    X: np.ndarray, p: OofParams, executor: Executor = SERIAL
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (distances (n, k) float32, labels (n,) int32) of k-means, as seed 004.

    Each fold is one ``fit_oof_fold`` job of ``executor``. Raises ValueError when there are
    fewer rows than splits, fewer than 2 splits, or fewer training rows than clusters.
    """
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d matrix, got shape {X.shape}")
    n = X.shape[0]
    check_oof_shape(n, p)
    folds = list(KFold(n_splits=p.n_splits, shuffle=True, random_state=p.random_state).split(X))
    dist = np.zeros((n, p.k), dtype=np.float32)
    labels = np.zeros(n, dtype=np.int32)
    results = executor.map(partial(fit_oof_fold, X, p=p), folds)
    for (_, held_out), (fold_dist, fold_labels) in zip(folds, results, strict=True):
        dist[held_out] = fold_dist
        labels[held_out] = fold_labels
    return dist, labels


def clamp_to_rows(p: OofParams, n: int) -> OofParams:
    """``p`` with splits and k clamped so ``n`` >= 2 rows can be clustered out of fold."""
    n_splits = min(p.n_splits, n)
    k = min(p.k, n - -(-n // n_splits))
    return OofParams(k, n_splits, p.batch_size, p.random_state, p.minibatch, p.n_init)
