"""Fitted preprocessing steps: what turned gathered raw rows into the clustered matrix.

The analysis's scaling functions (scaling.py, fusion.py, projection.py) return the parameters
they fitted; matrix.py and the driver record them here as steps, in the order they ran, so that
``apply_steps(steps, raw rows)`` reproduces the clustered matrix and new rows can be placed in it
(placement.py). Pure numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_KINDS = ("affine", "scale", "l2", "project", "pool")


@dataclass
class Step:
    """One preprocessing step.

    - ``affine``: (x - a) / b in float64, non-finite results → 0 (as ``standardize_inplace``);
    - ``scale``: x * b in float32 (family weights, fusion's block scales);
    - ``l2``: rows of columns [start, stop) to unit norm (zero rows stay zero);
    - ``project``: (x - a) @ b.T (a fitted PCA: ``mean_``, ``components_``);
    - ``pool``: mean of each track's window rows (needs the rows' track ids, see apply_steps).
    """

    kind: str
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    columns: tuple[int, int] | None = None

    def apply(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "affine":
            Z = (X.astype(np.float64) - self.a) / self.b
            Z[~np.isfinite(Z)] = 0.0
            return Z.astype(np.float32)
        if self.kind == "scale":
            return (X * self.b.astype(np.float32)).astype(np.float32)
        if self.kind == "project":
            return ((X.astype(np.float64) - self.a) @ self.b.T).astype(np.float32)
        if self.kind == "pool":
            raise ValueError("a pool step needs the rows' track ids: use apply_steps")
        start, stop = self.columns
        X = np.array(X, dtype=np.float32)
        part = X[:, start:stop].astype(np.float64)
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        X[:, start:stop] = part / np.where(norms > 0, norms, 1.0)
        return X


def affine_step(shift: np.ndarray, divide: np.ndarray) -> Step:
    return Step("affine", np.asarray(shift, np.float64), np.asarray(divide, np.float64))


def scale_step(factors: np.ndarray) -> Step:
    return Step("scale", b=np.asarray(factors, np.float32))


def l2_step(start: int, stop: int) -> Step:
    return Step("l2", columns=(int(start), int(stop)))


def pca_step(mean: np.ndarray, components: np.ndarray) -> Step:
    """A fitted PCA (scikit-learn's ``mean_`` and ``components_``) as a step."""
    return Step("project", np.asarray(mean, np.float64), np.asarray(components, np.float64))


POOL = Step("pool")


def pool_rows(X: np.ndarray, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean row per track, sorted unique ids): ``gather.pool_windows``'s arithmetic."""
    ids, inverse = np.unique(np.asarray(track_ids).astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    acc = np.zeros((len(ids), X.shape[1]), dtype=np.float64)
    np.add.at(acc, inverse, X)
    return (acc / counts[:, None]).astype(np.float32), ids.astype(object)


def run_steps(
    steps: list[Step], X: np.ndarray, track_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows after ``steps``, their track ids): a pool step merges rows of one track (ids sorted,
    as the analysis pools); without ``track_ids`` every row is taken to be one track already."""
    Y = np.asarray(X, dtype=np.float32)
    ids = None if track_ids is None else np.asarray(track_ids).astype(str).astype(object)
    for step in steps:
        if step.kind == "pool":
            if ids is not None:
                Y, ids = pool_rows(Y, ids)
            continue
        Y = step.apply(Y)
    return Y, ids


def apply_steps(
    steps: list[Step], X: np.ndarray, track_ids: np.ndarray | None = None
) -> np.ndarray:
    """Raw rows → rows of the clustered matrix (see :func:`run_steps`)."""
    return run_steps(steps, X, track_ids)[0]


def standardize_step(X: np.ndarray) -> Step:
    """Population mean and std per column, constant columns kept at scale 1 (as scaling.py)."""
    mean = np.nanmean(X.astype(np.float64), axis=0)
    scale = np.nanstd(X.astype(np.float64), axis=0)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    return affine_step(mean, scale)


def centre_l2_steps(X: np.ndarray, start: int = 0, stop: int | None = None) -> list[Step]:
    """Seed 000's centring + L2 of columns [start, stop) as two steps."""
    stop = X.shape[1] if stop is None else stop
    mean = np.zeros(X.shape[1])
    mean[start:stop] = X[:, start:stop].astype(np.float64).mean(axis=0)
    return [affine_step(mean, np.ones(X.shape[1])), l2_step(start, stop)]
