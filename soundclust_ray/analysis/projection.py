"""2-D maps (UMAP, PCA as in seed 002) and the optional PCA reduction before clustering.

Above ``fit_sample`` rows the projections are fitted on a seeded sample and every row is then
transformed in batches, so memory is bounded by the matrix plus one batch.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.decomposition import PCA

from soundclust_ray import numba_cache
from soundclust_ray.analysis.clustering import out_of_sample_batches, seeded_sample
from soundclust_ray.config import AnalysisConfig


def _transform_batches(model, X: np.ndarray, batch: int, desc: str, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    first = model.transform(X[: min(batch, len(X))])
    out = np.empty((X.shape[0], first.shape[1]), dtype=np.float32)
    out[: len(first)] = first
    for start in tqdm(
        range(len(first), X.shape[0], batch), desc=desc, disable=not progress, leave=False
    ):
        out[start : start + batch] = model.transform(X[start : start + batch])
    return out


def fit_pca_reduction(
    X: np.ndarray, n_components: float, cfg: AnalysisConfig
) -> tuple[np.ndarray, dict]:
    """PCA to an int number of components, or to a variance fraction in (0, 1).

    Returns the reduced float32 matrix and {n_components, explained_variance}.
    """
    Y, info, _ = fit_pca_reduction_model(X, n_components, cfg)
    return Y, info


def fit_pca_reduction_model(
    X: np.ndarray, n_components: float, cfg: AnalysisConfig
) -> tuple[np.ndarray, dict, PCA]:
    """:func:`fit_pca_reduction` and the fitted PCA (its axes are a placement step)."""
    n, d = X.shape
    if n_components <= 0:
        raise ValueError(f"pca must be a positive int or a fraction in (0, 1), got {n_components}")
    idx = seeded_sample(n, cfg.fit_sample, cfg.random_state)
    limit = min(len(idx), d)
    if n_components < 1:
        pca = PCA(
            n_components=float(n_components), svd_solver="full", random_state=cfg.random_state
        )
    else:
        pca = PCA(n_components=min(int(n_components), limit), random_state=cfg.random_state)
    pca.fit(X[idx])
    Y = _transform_batches(pca, X, cfg.predict_batch, "pca", False)
    info = {
        "requested": n_components,
        "n_components": int(pca.n_components_),
        "explained_variance": float(np.sum(pca.explained_variance_ratio_)),
        "fitted_rows": int(len(idx)),
    }
    return Y, info, pca


def fit_pca_2d(X: np.ndarray, cfg: AnalysisConfig) -> tuple[np.ndarray, dict]:
    """(n, 2) PCA map (seed 002) and the explained variance ratio of its two axes."""
    Y, info, _ = fit_pca_2d_model(X, cfg)
    return Y, info


def fit_pca_2d_model(X: np.ndarray, cfg: AnalysisConfig) -> tuple[np.ndarray, dict, PCA]:
    """:func:`fit_pca_2d` and the fitted PCA (its axes place new tracks on the map)."""
    n, d = X.shape
    if n < 2 or d < 1:
        raise ValueError(f"a PCA map needs at least 2 rows and 1 column, got {X.shape}")
    idx = seeded_sample(n, cfg.fit_sample, cfg.random_state)
    pca = PCA(n_components=min(2, d, len(idx)), random_state=cfg.random_state).fit(X[idx])
    Y = _transform_batches(pca, X, cfg.predict_batch, "pca map", False)
    if Y.shape[1] < 2:
        Y = np.column_stack([Y, np.zeros(n, dtype=np.float32)])
    info = {"explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_]}
    return Y.astype(np.float32), info, pca


def load_umap():
    """The umap module, imported with numba's on-disk cache enabled (``numba_cache``) and under
    its compile lock (pynndescent compiles its typed functions at import)."""
    numba_cache.enable()
    with numba_cache.compile_lock():
        import umap
    return umap


def fit_umap_2d(
    X: np.ndarray, cfg: AnalysisConfig, progress: bool = False
) -> tuple[np.ndarray, dict]:
    """(n, 2) seeded UMAP map (seed 002); above ``fit_sample`` rows fit on a sample, then transform.

    ``n_neighbors`` is clamped to rows - 1 for tiny inputs, which also use random init (the
    spectral init needs more points than dimensions); fewer than 3 rows is a ValueError.
    Numba's compiled code is cached across runs (``numba_cache``), compiled under its lock.
    """
    umap = load_umap()
    n_neighbors, min_dist, random_state = cfg.umap_n_neighbors, cfg.umap_min_dist, cfg.random_state
    n = X.shape[0]
    if n < 3:
        raise ValueError(f"UMAP needs at least 3 rows, got {n}")
    idx = seeded_sample(n, cfg.fit_sample, random_state)
    m = len(idx)
    nn = max(2, min(n_neighbors, m - 1))
    info: dict = {"n_neighbors": nn, "min_dist": min_dist, "fitted_rows": int(m)}
    if nn != n_neighbors:
        info["note"] = f"n_neighbors clamped from {n_neighbors} to {nn} for {m} rows"
    init = "spectral" if m > max(nn + 2, 10) else "random"
    model = umap.UMAP(
        n_components=2,
        n_neighbors=nn,
        min_dist=min_dist,
        metric="euclidean",
        random_state=random_state,
        init=init,
    )
    with warnings.catch_warnings(), numba_cache.compile_lock():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        warnings.filterwarnings("ignore", message=".*k >= N.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        t0 = time.perf_counter()
        if m == n:
            Y = model.fit_transform(X).astype(np.float32)
            info["seconds_fit"] = round(time.perf_counter() - t0, 4)
            return Y, info
        Y = np.empty((n, 2), dtype=np.float32)
        Y[idx] = model.fit_transform(X[idx])
        info["seconds_fit"] = round(time.perf_counter() - t0, 4)
        t0 = time.perf_counter()
        batches = out_of_sample_batches(n, idx, cfg.predict_batch, "umap transform", progress)
        for rows in batches:
            Y[rows] = model.transform(X[rows])
    info["out_of_sample_rows"] = int(n - len(idx))
    info["seconds_out_of_sample"] = round(time.perf_counter() - t0, 4)
    return Y, info
