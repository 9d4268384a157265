"""Cluster quality numbers for metrics.json; every value is a float, or None with a reason.

Silhouette is quadratic in rows, so it runs on a seeded sample; Davies–Bouldin and
Calinski–Harabasz are linear and run on every row, in blocks of rows (``dispersion_scores``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from soundclust_ray.analysis.clustering import seeded_sample
from soundclust_ray.analysis.scaling import BLOCK_ROWS
from soundclust_ray.config import AnalysisConfig


def _blocks(n: int):
    """Row slices of ``scaling.BLOCK_ROWS``, the analysis's block size for float64 temporaries."""
    return (slice(i, min(i + BLOCK_ROWS, n)) for i in range(0, n, BLOCK_ROWS))


def dispersion_scores(X: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(Davies–Bouldin, Calinski–Harabasz) of ``labels`` on ``X[rows]``, as sklearn defines
    them, from two passes over blocks of rows in float64: sklearn's own functions copy every
    cluster's rows (and ``X[rows]``), which was the analysis's peak memory at 1M x 200
    (+1.5 GiB over a 0.75 GiB matrix, bench/analysis.py)."""
    codes, inverse = np.unique(labels, return_inverse=True)
    k, n = len(codes), len(rows)
    counts = np.bincount(inverse, minlength=k).astype(np.float64)
    sums = np.zeros((k, X.shape[1]))
    for b in _blocks(n):
        np.add.at(sums, inverse[b], X[rows[b]].astype(np.float64))
    centroids = sums / counts[:, None]
    spread, within = np.zeros(k), 0.0
    for b in _blocks(n):
        gap = X[rows[b]].astype(np.float64) - centroids[inverse[b]]
        squared = np.einsum("ij,ij->i", gap, gap)
        within += float(squared.sum())
        spread += np.bincount(inverse[b], weights=np.sqrt(squared), minlength=k)
    mean = sums.sum(axis=0) / n
    between = float(counts @ ((centroids - mean) ** 2).sum(axis=1))
    ch = 1.0 if within == 0 else between * (n - k) / (within * (k - 1))
    return _davies_bouldin(spread / counts, centroids), ch


def _davies_bouldin(spread: np.ndarray, centroids: np.ndarray) -> float:
    """sklearn's Davies–Bouldin from each cluster's mean distance to its centroid."""
    gaps = np.sqrt(((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=-1))
    if np.allclose(spread, 0) or np.allclose(gaps, 0):
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (spread[:, None] + spread[None, :]) / gaps
    ratio[np.isinf(ratio)] = np.nan
    return float(np.mean(np.nanmax(ratio, axis=1)))


def cluster_sizes(labels: np.ndarray) -> dict[str, int]:
    """Label → count, keys as strings (JSON), sorted by label."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


def internal_metrics(
    X: np.ndarray, labels: np.ndarray, cfg: AnalysisConfig, ignore_noise: bool = False
) -> dict:
    """Silhouette (on a ``cfg.silhouette_sample`` seeded sample), Davies–Bouldin and
    Calinski–Harabasz of a labelling.

    With ``ignore_noise`` rows labelled -1 are left out (HDBSCAN). Values that cannot be
    computed (fewer than 2 clusters, or as many clusters as rows) are None, with ``reason``.
    """
    labels = np.asarray(labels)
    keep = labels >= 0 if ignore_noise else np.ones(len(labels), dtype=bool)
    out: dict = {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None}
    n = int(keep.sum())
    n_clusters = len(np.unique(labels[keep])) if n else 0
    out["n_clusters"] = n_clusters
    if not 2 <= n_clusters <= n - 1:
        out["reason"] = f"{n_clusters} clusters over {n} rows: scores need 2 <= clusters < rows"
        return out
    rows = np.flatnonzero(keep)
    idx = rows[seeded_sample(n, cfg.silhouette_sample, cfg.random_state)]
    ls = labels[idx]
    if 2 <= len(np.unique(ls)) <= len(idx) - 1:
        out["silhouette"] = float(skm.silhouette_score(X[idx], ls))
        out["silhouette_rows"] = int(len(idx))
    else:
        out["reason"] = "the silhouette sample holds fewer than 2 clusters"
    out["davies_bouldin"], out["calinski_harabasz"] = dispersion_scores(X, rows, labels[rows])
    return out


def label_metrics(true_labels, pred_labels) -> dict:
    """NMI, ARI, homogeneity, completeness and the contingency table against known labels.

    Missing true labels (None/NaN/empty) are left out; the count is reported.
    """
    true = pd.Series(true_labels, dtype=object).reset_index(drop=True)
    pred = pd.Series(np.asarray(pred_labels)).reset_index(drop=True)
    known = true.notna() & (true.astype(str).str.len() > 0)
    true, pred = true[known].astype(str), pred[known]
    out: dict = {"n_labelled": int(known.sum()), "n_unlabelled": int((~known).sum())}
    if len(true) < 2:
        out.update(nmi=None, ari=None, homogeneity=None, completeness=None, contingency=None)
        out["reason"] = f"{len(true)} labelled rows: need at least 2"
        return out
    h, c, _ = skm.homogeneity_completeness_v_measure(true, pred)
    out["nmi"] = float(skm.normalized_mutual_info_score(true, pred))
    out["ari"] = float(skm.adjusted_rand_score(true, pred))
    out["homogeneity"] = float(h)
    out["completeness"] = float(c)
    table = pd.crosstab(true.values, pred.values)
    out["contingency"] = {
        "labels": [str(v) for v in table.index],
        "clusters": [str(v) for v in table.columns],
        "counts": table.to_numpy().astype(int).tolist(),
    }
    return out


def json_safe(obj):
    """Recursively turn numpy scalars/arrays into JSON types and NaN/inf into None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj
