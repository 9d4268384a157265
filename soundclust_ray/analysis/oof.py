"""Out-of-fold k-means features (seed 004): each row is described by a model that never saw it.

The seed splits the rows with a shuffled, seeded KFold; for each split it fits a StandardScaler and
a MiniBatchKMeans on the training folds only, then writes the held-out fold's distances to the k
centroids and its predicted labels. The result can feed a downstream model without leakage.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from soundclust_ray.config import RANDOM_STATE, MsdConfig

_MSD = MsdConfig()


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
        scaler = StandardScaler().fit(X[tr])
        z_tr = scaler.transform(X[tr])
        z_va = scaler.transform(X[va])
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
