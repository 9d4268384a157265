"""Clustering of the scaled matrix: k-means (seed 002), k selection, HDBSCAN, window votes.

Pure functions on numpy arrays. Above ``fit_sample`` rows HDBSCAN is fitted on a seeded sample
with ``prediction_data=True`` and the remaining rows are assigned with ``approximate_predict``
in batches, so a million rows never build a million-point density tree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score

from soundclust_ray.analysis.executor import SERIAL, Executor
from soundclust_ray.config import MINIBATCH_N_INIT, AnalysisConfig


def seeded_sample(n: int, size: int, random_state: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``size`` rows out of ``n`` (all rows when n <= size)."""
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=size, replace=False))


def fit_kmeans(X: np.ndarray, k: int, cfg: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,) int32, centres (k, d) float32): KMeans, or MiniBatchKMeans above a size."""
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of rows ({n})")
    if n > cfg.minibatch_above:
        km = MiniBatchKMeans(
            n_clusters=k,
            random_state=cfg.random_state,
            batch_size=cfg.minibatch_size,
            n_init=MINIBATCH_N_INIT,
        )
    else:
        km = KMeans(n_clusters=k, random_state=cfg.random_state, n_init=cfg.kmeans_n_init)
    labels = km.fit_predict(X)
    return labels.astype(np.int32), km.cluster_centers_.astype(np.float32)


def score_k(Xs: np.ndarray, k: int, cfg: AnalysisConfig) -> dict:
    """One point of the k-selection curve: {k, silhouette, inertia} of a KMeans on ``Xs``."""
    km = KMeans(n_clusters=k, random_state=cfg.random_state, n_init=cfg.kmeans_n_init).fit(Xs)
    labels = km.labels_
    sil = float(silhouette_score(Xs, labels)) if len(np.unique(labels)) > 1 else float("nan")
    return {"k": k, "silhouette": sil, "inertia": float(km.inertia_)}


def select_k(
    X: np.ndarray, cfg: AnalysisConfig, executor: Executor = SERIAL
) -> tuple[int, list[dict]]:
    """k with the best silhouette over ``cfg.k_auto_range`` (inclusive), on a seeded sample.

    Returns (best k, curve of {k, silhouette, inertia}); each k is one ``score_k`` job of
    ``executor``. The range is clipped to what the sample allows (2 <= k <= rows - 1); fewer
    than 3 rows is a ValueError.
    """
    k_range = cfg.k_auto_range
    idx = seeded_sample(X.shape[0], cfg.silhouette_sample, cfg.random_state)
    Xs = X[idx]
    m = len(idx)
    if m < 3:
        raise ValueError(f"k selection needs at least 3 rows, got {m}")
    lo, hi = max(2, k_range[0]), min(k_range[1], m - 1)
    if lo > hi:
        raise ValueError(f"k range {k_range} is empty for {m} rows")
    curve = executor.map(partial(score_k, Xs, cfg=cfg), range(lo, hi + 1))
    valid = [c for c in curve if np.isfinite(c["silhouette"])]
    best = max(valid, key=lambda c: c["silhouette"])["k"] if valid else lo
    return int(best), curve


def fit_hdbscan(
    X: np.ndarray, cfg: AnalysisConfig, progress: bool = False
) -> tuple[np.ndarray, dict]:
    """(labels (n,) int32 with noise -1, info) of HDBSCAN (eom, as seed 002).

    Above ``cfg.fit_sample`` rows the model is fitted on a seeded sample and the rest is assigned
    out of sample (``approximate_predict``). Fewer rows than ``min_cluster_size`` give
    all-noise labels and a reason.
    """
    import hdbscan

    min_cluster_size, min_samples = cfg.hdbscan_min_cluster_size, cfg.hdbscan_min_samples
    n = X.shape[0]
    info: dict = {"min_cluster_size": min_cluster_size, "min_samples": min_samples}
    if n < max(min_cluster_size, 2):
        info["skipped"] = f"{n} rows < min_cluster_size={min_cluster_size}: all rows are noise"
        return np.full(n, -1, dtype=np.int32), info
    min_samples = min(min_samples, n - 1) if min_samples is not None else None
    idx = seeded_sample(n, cfg.fit_sample, cfg.random_state)
    sampled = len(idx) < n
    model = hdbscan.HDBSCAN(
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        cluster_selection_method="eom",
        prediction_data=sampled,
    )
    t0 = time.perf_counter()
    fit_labels = model.fit_predict(X[idx] if sampled else X)
    info["fitted_rows"] = int(len(idx))
    info["seconds_fit"] = round(time.perf_counter() - t0, 4)
    if not sampled:
        return fit_labels.astype(np.int32), info
    labels = np.empty(n, dtype=np.int32)
    labels[idx] = fit_labels
    t0 = time.perf_counter()
    batches = out_of_sample_batches(n, idx, cfg.predict_batch, "hdbscan predict", progress)
    for rows in batches:
        pred, _ = hdbscan.approximate_predict(model, X[rows])
        labels[rows] = pred
    info["out_of_sample_rows"] = int(n - len(idx))
    info["seconds_out_of_sample"] = round(time.perf_counter() - t0, 4)
    return labels, info


def out_of_sample_batches(
    n: int, idx: np.ndarray, batch: int, desc: str, progress: bool
) -> Iterator[np.ndarray]:
    """The rows outside the fitted sample ``idx``, ``batch`` at a time (with a progress bar)."""
    from tqdm.auto import tqdm

    rest = np.setdiff1d(np.arange(n), idx, assume_unique=True)
    for start in tqdm(range(0, len(rest), batch), desc=desc, disable=not progress, leave=False):
        yield rest[start : start + batch]


def vote_windows(track_ids: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority label per track of window-level labels: (unique track ids, labels).

    Noise (-1) windows only win when a track has no clustered window; ties go to the smaller
    label, so the vote is deterministic.
    """
    ids, inverse = np.unique(np.asarray(track_ids).astype(str), return_inverse=True)
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(len(ids), -1, dtype=np.int32)
    clustered = labels >= 0
    if clustered.any():
        n_labels = int(labels.max()) + 1
        counts = np.zeros((len(ids), n_labels), dtype=np.int64)
        np.add.at(counts, (inverse[clustered], labels[clustered]), 1)
        has = counts.sum(axis=1) > 0
        out[has] = counts[has].argmax(axis=1)
    return ids.astype(object), out
