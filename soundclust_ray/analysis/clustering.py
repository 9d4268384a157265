"""Clustering of the scaled matrix: k-means (seed 002), k selection, HDBSCAN, window votes.

Pure functions on numpy arrays. Above ``fit_sample`` rows HDBSCAN is fitted on a seeded sample
with ``prediction_data=True`` and the remaining rows are assigned by ``approximate_predict``'s
rule, vectorized (``assign_hdbscan``), in batches, so a million rows never build a
million-point density tree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score

from soundclust_ray.analysis.executor import SERIAL, Executor
from soundclust_ray.config import (
    HDBSCAN_MIN_CLUSTER_SIZE_PER_SQRT_ROW,
    HDBSCAN_WARN_NOISE_FRACTION,
    MINIBATCH_N_INIT,
    AnalysisConfig,
)


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


def hdbscan_min_cluster_size(n_fit: int, cfg: AnalysisConfig) -> int:
    """min_cluster_size for HDBSCAN fitted on ``n_fit`` rows: the configured value, raised to
    round(HDBSCAN_MIN_CLUSTER_SIZE_PER_SQRT_ROW x sqrt(n_fit)) when it scales with the corpus."""
    size = cfg.hdbscan_min_cluster_size
    if cfg.hdbscan_scale_min_cluster_size:
        size = max(size, round(HDBSCAN_MIN_CLUSTER_SIZE_PER_SQRT_ROW * np.sqrt(n_fit)))
    return int(size)


def hdbscan_warning(labels: np.ndarray, min_cluster_size: int) -> str | None:
    """One line when HDBSCAN's labels say nothing of the corpus (mostly noise, or one cluster)."""
    n = len(labels)
    noise = float(np.mean(labels < 0)) if n else 1.0
    clusters = int(len(np.unique(labels[labels >= 0])))
    if noise < HDBSCAN_WARN_NOISE_FRACTION and clusters != 1:
        return None
    found = f"{clusters} cluster{'s' if clusters != 1 else ''}, {noise:.0%} of {n} rows noise"
    return (
        f"HDBSCAN found {found} (min_cluster_size {min_cluster_size}): no density clusters at "
        "this corpus size; use the k-means labels, or try another --min-cluster-size"
    )


def fit_hdbscan(
    X: np.ndarray, cfg: AnalysisConfig, progress: bool = False, executor: Executor = SERIAL
) -> tuple[np.ndarray, dict]:
    """(labels, info) of :func:`fit_hdbscan_tree`."""
    labels, info, _ = fit_hdbscan_tree(X, cfg, progress, executor)
    return labels, info


def fit_hdbscan_tree(
    X: np.ndarray, cfg: AnalysisConfig, progress: bool = False, executor: Executor = SERIAL
) -> tuple[np.ndarray, dict, HdbscanTree | None]:
    """(labels (n,) int32 with noise -1, info, the fitted tree or None) of HDBSCAN (eom, as
    seed 002); the tree (``HdbscanTree``) assigns new rows by approximate_predict's rule.

    Above ``cfg.fit_sample`` rows the model is fitted on a seeded sample and the rest is assigned
    out of sample by ``assign_hdbscan`` (``approximate_predict``'s rule, vectorized), one
    ``executor`` job per ``cfg.predict_batch`` rows. min_cluster_size scales with the rows
    fitted (``hdbscan_min_cluster_size``). Fewer rows than min_cluster_size give all-noise labels
    and a reason; labels that are mostly noise or one cluster add ``info["warning"]``.
    """
    import hdbscan

    n = X.shape[0]
    idx = seeded_sample(n, cfg.fit_sample, cfg.random_state)
    min_cluster_size = hdbscan_min_cluster_size(len(idx), cfg)
    min_samples = cfg.hdbscan_min_samples
    info: dict = {"min_cluster_size": min_cluster_size, "min_samples": min_samples}
    if cfg.hdbscan_scale_min_cluster_size:
        info["min_cluster_size_rule"] = (
            f"max({cfg.hdbscan_min_cluster_size}, round({HDBSCAN_MIN_CLUSTER_SIZE_PER_SQRT_ROW:g}"
            f" x sqrt({len(idx)} rows)))"
        )
    if n < max(min_cluster_size, 2):
        info["skipped"] = f"{n} rows < min_cluster_size={min_cluster_size}: all rows are noise"
        info["warning"] = hdbscan_warning(np.full(n, -1), min_cluster_size)
        return np.full(n, -1, dtype=np.int32), info, None
    min_samples = min(min_samples, n - 1) if min_samples is not None else None
    sampled = len(idx) < n
    model = hdbscan.HDBSCAN(
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        cluster_selection_method="eom",
        prediction_data=True,  # for the out-of-sample rows, and kept to place tracks later
    )
    t0 = time.perf_counter()
    fit_labels = model.fit_predict(X[idx] if sampled else X)
    info["fitted_rows"] = int(len(idx))
    info["seconds_fit"] = round(time.perf_counter() - t0, 4)
    warning = hdbscan_warning(fit_labels, min_cluster_size)
    if warning:
        info["warning"] = warning
    tree = hdbscan_tree(model, min_samples if min_samples is not None else min_cluster_size)
    if not sampled:
        return fit_labels.astype(np.int32), info, tree
    tree = with_search_index(tree, cfg)
    labels = np.empty(n, dtype=np.int32)
    labels[idx] = fit_labels
    t0 = time.perf_counter()
    batches = list(out_of_sample_batches(n, idx, cfg.predict_batch, "hdbscan predict", progress))
    results = executor.map(partial(assign_hdbscan_rows, tree, X), batches)
    for rows, pred in zip(batches, results, strict=True):
        labels[rows] = pred
    info["out_of_sample_rows"] = int(n - len(idx))
    info["seconds_out_of_sample"] = round(time.perf_counter() - t0, 4)
    return labels, info, tree


def assign_hdbscan_rows(tree: HdbscanTree, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Labels of ``X[rows]`` (one executor job of the out-of-sample assignment)."""
    return assign_hdbscan(tree, X[rows])[0]


@dataclass(frozen=True)
class HdbscanTree:
    """What out-of-sample assignment needs of a fitted HDBSCAN, as flat arrays (picklable, so a
    Ray task can take it): the fitted points with their core distances, each point's row of the
    condensed tree, and per cluster id its parent, birth lambda, label and max lambda."""

    points: np.ndarray
    core_distances: np.ndarray
    point_parent: np.ndarray
    point_lambda: np.ndarray
    cluster_parent: np.ndarray
    cluster_lambda: np.ndarray
    cluster_label: np.ndarray
    cluster_max_lambda: np.ndarray
    root: int
    min_samples: int
    search_index: np.ndarray | None = None
    """A serialized FAISS IVF index of ``points`` (``with_search_index``) for a large
    out-of-sample assignment; None: exact search (small fits, a placement model read back)."""
    search_nprobe: int = 0


def hdbscan_tree(model, min_samples: int) -> HdbscanTree:
    """The arrays of ``HdbscanTree`` from a model fitted with ``prediction_data=True``."""
    pd = model.prediction_data_
    raw = model.condensed_tree_._raw_tree
    n_fit = pd.raw_data.shape[0]
    n_nodes = int(max(raw["parent"].max(), raw["child"].max())) + 1
    is_point = raw["child"] < n_fit
    point_parent = np.empty(n_fit, dtype=np.int64)
    point_lambda = np.empty(n_fit, dtype=np.float64)
    point_parent[raw["child"][is_point]] = raw["parent"][is_point]
    point_lambda[raw["child"][is_point]] = raw["lambda_val"][is_point]
    ct = pd.cluster_tree
    cluster_parent = np.full(n_nodes, -1, dtype=np.int64)
    cluster_lambda = np.full(n_nodes, -np.inf)
    cluster_parent[ct["child"]] = ct["parent"]
    cluster_lambda[ct["child"]] = ct["lambda_val"]
    cluster_label = np.full(n_nodes, -1, dtype=np.int32)
    cluster_max_lambda = np.zeros(n_nodes)
    for cluster, label in pd.cluster_map.items():
        cluster_label[cluster] = label
        cluster_max_lambda[cluster] = pd.max_lambdas[cluster]
    return HdbscanTree(
        points=np.ascontiguousarray(pd.raw_data, dtype=np.float32),
        core_distances=pd.core_distances.astype(np.float64),
        point_parent=point_parent,
        point_lambda=point_lambda,
        cluster_parent=cluster_parent,
        cluster_lambda=cluster_lambda,
        cluster_label=cluster_label,
        cluster_max_lambda=cluster_max_lambda,
        root=int(ct["parent"].min()) if len(ct) else int(raw["parent"].min()),
        min_samples=min_samples,
    )


def with_search_index(tree: HdbscanTree, cfg: AnalysisConfig) -> HdbscanTree:
    """``tree`` with an IVF index of its points when they are many (``cfg.hdbscan_ivf_above``):
    an exact search compares every new row with every fitted point, and at 50k points that
    selection was most of the assignment's time (bench/analysis.py --oos). Trained once, with
    FAISS's seeded k-means, and carried serialized so that every executor job reads it."""
    import faiss

    n, d = tree.points.shape
    if n < cfg.hdbscan_ivf_above:
        return tree
    nlist = int(round(cfg.hdbscan_ivf_lists_per_sqrt_point * np.sqrt(n)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    index.cp.seed = cfg.random_state
    index.train(tree.points)
    index.add(tree.points)
    blob = faiss.serialize_index(index)
    return replace(tree, search_index=blob, search_nprobe=cfg.hdbscan_ivf_nprobe)


def _nearest_fitted(tree: HdbscanTree, Xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances, ids) of the ``k`` nearest fitted points of each row of ``Xq``."""
    import faiss

    if tree.search_index is not None:
        index = faiss.deserialize_index(tree.search_index)
        index.nprobe = tree.search_nprobe
    else:
        index = faiss.IndexFlatL2(tree.points.shape[1])
        index.add(tree.points)
    return index.search(np.ascontiguousarray(Xq, dtype=np.float32), k)


def assign_hdbscan(tree: HdbscanTree, Xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels int32, probabilities) of new rows, as ``hdbscan.approximate_predict`` computes
    them but for all rows at once: one FAISS search for the 2 x min_samples nearest fitted
    points (exact, or the tree's IVF index), the nearest by mutual reachability, then a
    vectorized walk up the condensed tree (the library loops over rows in Python at ~1 ms each)."""
    ms = tree.min_samples
    sq, nbr = _nearest_fitted(tree, Xq, 2 * ms)
    nbr = np.where(nbr < 0, nbr.max(axis=1, keepdims=True), nbr)  # IVF: fewer than k found
    dist = np.sqrt(np.maximum(sq, 0.0).astype(np.float64))
    mr = np.maximum(np.maximum(tree.core_distances[nbr], dist[:, ms : ms + 1]), dist)
    best = mr.argmin(axis=1)
    rows = np.arange(len(Xq))
    nearest = nbr[rows, best]
    mr_best = mr[rows, best]
    with np.errstate(divide="ignore"):
        lam = np.where(mr_best > 0.0, 1.0 / mr_best, np.finfo(np.double).max)
    cluster = tree.point_parent[nearest].copy()
    climb = tree.point_lambda[nearest] > lam
    while climb.any():
        cur = cluster[climb]
        up = (cur > tree.root) & (tree.cluster_lambda[cur] >= lam[climb])
        cluster[np.flatnonzero(climb)[up]] = tree.cluster_parent[cur[up]]
        climb[np.flatnonzero(climb)[~up]] = False
    labels = tree.cluster_label[cluster]
    max_lam = tree.cluster_max_lambda[cluster]
    with np.errstate(divide="ignore", invalid="ignore"):
        prob = np.where(max_lam > 0.0, np.minimum(max_lam, lam) / max_lam, 1.0)
    return labels, np.where(labels >= 0, prob, 0.0)


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
