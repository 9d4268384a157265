"""Placing new tracks into a saved clustering without moving the old ones.

A growing catalogue must keep its map: re-running the analysis on more tracks refits k-means,
HDBSCAN and UMAP and moves every point. Instead the analysis saves what it fitted — the
preprocessing steps that turned raw rows into the clustered matrix (standardization, centring,
L2, weights, PCA), the k-means centres, the 2-D PCA axes, and a seeded sample of the training
rows with their HDBSCAN labels and UMAP positions — as arrays (``.npz``, read with
``allow_pickle=False``) plus JSON, never pickle. :func:`place` then assigns new rows:

- k-means: the nearest saved centre (what ``KMeans.predict`` does);
- PCA map: the saved axes, exactly;
- HDBSCAN label and UMAP position: from the ``neighbours`` nearest saved training rows — the
  majority label, and the inverse-distance weighted mean position — so a new track lands among
  the tracks it resembles and no old position changes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np

from soundclust_ray import outdir
from soundclust_ray.config import PlacementConfig

ARRAYS = "placement.npz"
META = "placement.json"
STEP_KINDS = ("affine", "l2", "project")


@dataclass
class Step:
    """One preprocessing step: ``affine`` (x - a) / b, ``l2`` rows of columns [start, stop),
    ``project`` (x - a) @ b.T (a PCA)."""

    kind: str
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    columns: tuple[int, int] | None = None

    def apply(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "affine":
            return ((X - self.a) / self.b).astype(np.float32)
        if self.kind == "project":
            return ((X - self.a) @ self.b.T).astype(np.float32)
        start, stop = self.columns
        X = X.copy()
        part = X[:, start:stop]
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        X[:, start:stop] = part / np.where(norms > 0, norms, 1.0)
        return X


def standardize_step(X: np.ndarray) -> Step:
    """Population mean and std per column, constant columns kept at scale 1 (as scaling.py)."""
    mean = np.nanmean(X.astype(np.float64), axis=0)
    scale = np.nanstd(X.astype(np.float64), axis=0)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    return Step("affine", mean, scale)


def centre_l2_steps(X: np.ndarray, start: int = 0, stop: int | None = None) -> list[Step]:
    """Seed 000's centring + L2 of columns [start, stop) as two steps."""
    stop = X.shape[1] if stop is None else stop
    mean = np.zeros(X.shape[1])
    mean[start:stop] = X[:, start:stop].astype(np.float64).mean(axis=0)
    return [Step("affine", mean, np.ones(X.shape[1])), Step("l2", columns=(start, stop))]


def pca_step(mean: np.ndarray, components: np.ndarray) -> Step:
    """A fitted PCA (scikit-learn's ``mean_`` and ``components_``) as a step."""
    return Step("project", np.asarray(mean, np.float64), np.asarray(components, np.float64))


def apply_steps(steps: list[Step], X: np.ndarray) -> np.ndarray:
    """Raw rows → rows of the clustered matrix."""
    Y = np.asarray(X, dtype=np.float32)
    for step in steps:
        Y = step.apply(Y)
    return Y


@dataclass
class PlacementModel:
    """Everything :func:`place` needs, in arrays and plain values."""

    steps: list[Step]
    centres: np.ndarray
    """(k, d) k-means centres in the clustered space."""
    train_X: np.ndarray
    """(m, d) seeded sample of training rows in the clustered space."""
    train_hdbscan: np.ndarray
    train_umap: np.ndarray
    """(m, 2) their UMAP positions (NaN when the run had no UMAP)."""
    pca_map: Step | None = None
    neighbours: int = PlacementConfig.neighbours
    columns: list[str] = field(default_factory=list)


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
) -> PlacementModel:
    """A model from the clustered matrix ``X`` and what the analysis fitted on it."""
    rng = np.random.default_rng(random_state)
    n = len(X)
    rows = np.sort(rng.choice(n, min(n, cfg.map_sample), replace=False))
    return PlacementModel(
        steps,
        np.asarray(centres, np.float32),
        np.ascontiguousarray(X[rows], np.float32),
        np.asarray(hdbscan)[rows].astype(np.int32),
        np.asarray(umap_xy, np.float32)[rows],
        pca_map,
        cfg.neighbours,
        list(columns or []),
    )


def place(model: PlacementModel, X_raw: np.ndarray) -> dict[str, np.ndarray]:
    """kmeans, hdbscan, umap_x/y, pca_x/y of new raw rows (the model is not changed)."""
    import faiss

    Y = np.ascontiguousarray(apply_steps(model.steps, X_raw), dtype=np.float32)
    d2 = (Y**2).sum(1)[:, None] - 2 * Y @ model.centres.T + (model.centres**2).sum(1)[None, :]
    result = {"kmeans": np.argmin(d2, axis=1).astype(np.int32)}
    index = faiss.IndexFlatL2(Y.shape[1])
    index.add(model.train_X)
    k = min(model.neighbours, len(model.train_X))
    dist2, rows = index.search(Y, k)
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
        result["pca_x"], result["pca_y"] = xy[:, 0], xy[:, 1]
    return result


def save_placement(out: str, model: PlacementModel) -> None:
    """OUT/fitted/placement.npz (arrays) and placement.json (what they are), JSON last."""
    arrays = {
        "centres": model.centres,
        "train_X": model.train_X,
        "train_hdbscan": model.train_hdbscan,
        "train_umap": model.train_umap,
    }
    steps = []
    for i, step in enumerate([*model.steps, *([model.pca_map] if model.pca_map else [])]):
        for name in ("a", "b"):
            value = getattr(step, name)
            if value is not None:
                arrays[f"step{i}_{name}"] = value
        steps.append({"kind": step.kind, "columns": step.columns})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    outdir.write_bytes(out, outdir.fitted_file(ARRAYS), buf.getvalue())
    meta = {
        "steps": steps[: len(model.steps)],
        "pca_map": steps[len(model.steps)] if model.pca_map else None,
        "neighbours": model.neighbours,
        "columns": model.columns,
    }
    outdir.write_json(out, outdir.fitted_file(META), meta)


def load_placement(out: str) -> PlacementModel | None:
    """The saved model, or None when the run saved none."""
    meta = outdir.read_json(out, outdir.fitted_file(META))
    data = outdir.read_bytes(out, outdir.fitted_file(ARRAYS))
    if not meta or data is None:
        return None
    arrays = np.load(io.BytesIO(data), allow_pickle=False)
    listed = [*meta["steps"], *([meta["pca_map"]] if meta["pca_map"] else [])]
    steps = []
    for i, spec in enumerate(listed):
        if spec["kind"] not in STEP_KINDS:
            raise ValueError(f"unknown placement step {spec['kind']!r} in {META}")
        a, b = (arrays.get(f"step{i}_{n}") for n in "ab")
        columns = tuple(spec["columns"]) if spec["columns"] else None
        steps.append(Step(spec["kind"], a, b, columns))
    pca_map = steps.pop() if meta["pca_map"] else None
    return PlacementModel(
        steps,
        arrays["centres"],
        arrays["train_X"],
        arrays["train_hdbscan"],
        arrays["train_umap"],
        pca_map,
        int(meta["neighbours"]),
        list(meta.get("columns", [])),
    )


def describe(model: PlacementModel) -> str:
    """One JSON line of what the model holds (for logs and the CLI)."""
    return json.dumps(
        {
            "steps": [s.kind for s in model.steps],
            "k": len(model.centres),
            "map_rows": len(model.train_X),
            "neighbours": model.neighbours,
        }
    )
