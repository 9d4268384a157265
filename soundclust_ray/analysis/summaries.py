"""Per-cluster summaries (seed 002's interpretation step, extended to any metadata).

For each cluster: its size, the mean, min and max of every numeric metadata column, the top
values of every categorical column, the tracks nearest its centre, and (when the embedding
backend wrote tag probabilities) its tags: ``top_tags``, the highest mean probability, and
``distinctive_tags`` / ``name``, the tags whose cluster mean most exceeds the corpus mean.
HDBSCAN's noise (-1) gets the same summary, listed apart (:func:`split_noise`): it is no cluster.

Why both: the most probable tags are the corpus's common ones, shared by many clusters (on
mer4q_genre, k-means k=7 on MSD_musicnn: "rock" is among the 3 most probable tags of 4 of the 7
clusters; a mixed Country/RnB/Reggae cluster reads "rock, country, pop"), so they do not tell
clusters apart; ranking by the standardized excess ``z = (cluster mean - corpus mean) / corpus
std`` names that cluster "70s, 60s, male_vocalists", the Rap one "hip_hop, party, sexy" and
the PopRock ones "punk, hard_rock, rock" / "metal, heavy_metal, hard_rock" / "indie_pop,
indie, beautiful" (bench run of 2026-12-01).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from soundclust_ray.config import AnalysisConfig

_CFG = AnalysisConfig()
SKIP_COLUMNS = {"track_id", "path"}
BLOCK_ROWS = 65536


def cluster_centres(X: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Mean row of each non-noise cluster, accumulated in row blocks (float64)."""
    labels = np.asarray(labels)
    ids = [int(c) for c in np.unique(labels) if c >= 0]
    if not ids:
        return {}
    pos = {c: i for i, c in enumerate(ids)}
    sums = np.zeros((len(ids), X.shape[1]), dtype=np.float64)
    counts = np.zeros(len(ids), dtype=np.int64)
    for start in range(0, X.shape[0], BLOCK_ROWS):
        lb = labels[start : start + BLOCK_ROWS]
        keep = lb >= 0
        rows = np.array([pos[int(c)] for c in lb[keep]], dtype=np.int64)
        np.add.at(sums, rows, X[start : start + BLOCK_ROWS][keep].astype(np.float64))
        counts += np.bincount(rows, minlength=len(ids))
    return {c: (sums[pos[c]] / max(counts[pos[c]], 1)).astype(np.float32) for c in ids}


def nearest_to_centres(
    X: np.ndarray, labels: np.ndarray, centres: dict[int, np.ndarray], n: int
) -> dict[int, list[tuple[int, float]]]:
    """Cluster → [(row, distance)] of its ``n`` members nearest its centre, closest first."""
    labels = np.asarray(labels)
    if not centres:
        return {}
    ids = sorted(centres)
    C = np.stack([centres[c] for c in ids]).astype(np.float32)
    pos = np.full(int(max(ids)) + 1, -1, dtype=np.int64)
    pos[ids] = np.arange(len(ids))
    dist = np.full(X.shape[0], np.inf, dtype=np.float32)
    for start in range(0, X.shape[0], BLOCK_ROWS):
        lb = labels[start : start + BLOCK_ROWS]
        keep = np.flatnonzero(lb >= 0)
        diff = X[start : start + BLOCK_ROWS][keep] - C[pos[lb[keep]]]
        dist[start + keep] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    out = {}
    for c in ids:
        members = np.flatnonzero(labels == c)
        best = members[np.argsort(dist[members], kind="stable")[:n]]
        out[c] = [(int(r), float(dist[r])) for r in best]
    return out


def _metadata_kinds(meta: pd.DataFrame) -> tuple[list[str], list[str]]:
    numeric, categorical = [], []
    for col in meta.columns:
        if col in SKIP_COLUMNS:
            continue
        s = meta[col]
        if pd.api.types.is_bool_dtype(s):
            categorical.append(col)
        elif pd.api.types.is_numeric_dtype(s):
            numeric.append(col)
        else:
            categorical.append(col)
    return numeric, categorical


def numeric_statistics(part: pd.DataFrame, numeric: list[str]) -> dict[str, dict]:
    """``numeric_means``, ``numeric_min`` and ``numeric_max``: {column: value} over the finite
    values of ``part`` (seed 002 gives min and max beside the mean), None where there are none."""
    out: dict[str, dict] = {"numeric_means": {}, "numeric_min": {}, "numeric_max": {}}
    for col in numeric:
        values = pd.to_numeric(part[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        values = values[np.isfinite(values)]
        some = values.size > 0
        out["numeric_means"][col] = float(values.mean()) if some else None
        out["numeric_min"][col] = float(values.min()) if some else None
        out["numeric_max"][col] = float(values.max()) if some else None
    return out


def split_noise(entries: list[dict]) -> tuple[list[dict], dict | None]:
    """(the clusters' entries, the noise entry or None): HDBSCAN's -1 rows are no cluster, so
    cluster_summaries.json lists them apart."""
    clusters = [e for e in entries if e["cluster"] >= 0]
    noise = [e for e in entries if e["cluster"] < 0]
    return clusters, (noise[0] if noise else None)


def tag_statistics(tags: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values (n, t) float64, corpus mean (t,), corpus std (t,)) over finite values."""
    values = tags.to_numpy(dtype=np.float64)
    mean = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0)
    std = np.nanstd(np.where(np.isfinite(values), values, np.nan), axis=0)
    return values, mean, std


def distinctive_tags(
    values: np.ndarray,
    corpus_mean: np.ndarray,
    corpus_std: np.ndarray,
    names: list[str],
    mask: np.ndarray,
    top: int,
) -> list[dict]:
    """The ``top`` tags whose mean over ``mask`` rows most exceeds the corpus mean (z > 0 only).

    Each entry: tag, cluster mean, corpus mean, ``z`` (excess over the corpus std) and ``lift``
    (cluster mean / corpus mean), most distinctive first; constant tags are never distinctive.
    """
    part = values[mask]
    if not len(part):
        return []
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(np.where(np.isfinite(part), part, np.nan), axis=0)
        z = (mean - corpus_mean) / corpus_std
        lift = mean / corpus_mean
    z = np.where(np.isfinite(z) & (corpus_std > 0), z, -np.inf)
    order = [i for i in np.argsort(-z, kind="stable")[:top] if z[i] > 0]
    return [
        {
            "tag": str(names[i]),
            "mean": float(mean[i]),
            "corpus_mean": float(corpus_mean[i]),
            "z": float(z[i]),
            "lift": float(lift[i]) if np.isfinite(lift[i]) else None,
        }
        for i in order
    ]


def summarize_clusters(
    X: np.ndarray,
    labels: np.ndarray,
    meta: pd.DataFrame,
    centres: dict[int, np.ndarray] | None = None,
    tags: pd.DataFrame | None = None,
    nearest: int = _CFG.summary_nearest,
    top: int = _CFG.summary_top_values,
) -> list[dict]:
    """One dict per cluster (noise -1 last, without nearest tracks), rows of ``meta`` aligned to X.

    ``centres`` defaults to each cluster's mean row (k-means passes its fitted centres).
    With ``tags``, each cluster also gets ``top_tags``, ``distinctive_tags`` and ``name`` (its
    distinctive tags joined, "" when none exceeds the corpus mean).
    """
    labels = np.asarray(labels)
    meta = meta.reset_index(drop=True)
    if centres is None:
        centres = cluster_centres(X, labels)
    near = nearest_to_centres(X, labels, centres, nearest)
    numeric, categorical = _metadata_kinds(meta)
    track_ids = meta["track_id"].astype(str).to_numpy() if "track_id" in meta else None
    has_tags = tags is not None and len(tags.columns) > 0
    if has_tags:
        tags = tags.reset_index(drop=True)
        tag_values, tag_mean, tag_std = tag_statistics(tags)
    summaries = []
    order = sorted(int(c) for c in np.unique(labels) if c >= 0)
    if (labels < 0).any():
        order.append(-1)
    for c in order:
        mask = labels == c
        part = meta[mask]
        entry: dict = {"cluster": c, "size": int(mask.sum())}
        entry.update(numeric_statistics(part, numeric))
        entry["top_values"] = {}
        for col in categorical:
            counts = part[col].dropna().astype(str).value_counts().head(top)
            entry["top_values"][col] = [[str(v), int(n)] for v, n in counts.items()]
        if c >= 0 and track_ids is not None:
            entry["nearest_tracks"] = [
                {"track_id": str(track_ids[r]), "distance": d} for r, d in near.get(c, [])
            ]
        if has_tags:
            means = tags[mask].mean(axis=0, skipna=True)
            means = means.dropna().sort_values(ascending=False).head(top)
            entry["top_tags"] = [[str(t), float(v)] for t, v in means.items()]
            entry["distinctive_tags"] = distinctive_tags(
                tag_values, tag_mean, tag_std, list(tags.columns), mask, top
            )
            entry["name"] = ", ".join(t["tag"] for t in entry["distinctive_tags"])
        summaries.append(entry)
    return summaries
