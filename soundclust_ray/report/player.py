"""The report's player: a relative link from OUT to each local track, and its nearest neighbours.

The report never copies audio: ``<audio src>`` points at the track where it lies, by a path
relative to OUT, so the report keeps playing when OUT and the corpus move together. Every
path segment is percent-encoded (``#``, ``?``, ``%``, ``:`` and spaces included), so a file name
can neither end the URL early nor be read as a ``javascript:`` or other scheme.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import quote, unquote, urlparse

import numpy as np


def _local_path(location: str) -> str | None:
    """A local filesystem path for a plain path or ``file://`` URI; None for remote URIs."""
    if location.startswith("file://"):
        return unquote(urlparse(location).path)
    if "://" in location:
        return None
    return os.path.abspath(location)


def audio_links(paths: Sequence[object], out: str) -> list[str | None]:
    """For each track path, a percent-encoded URL relative to OUT, or None when OUT or the
    track is not on the local filesystem (an ``s3://`` corpus cannot be played from a file)."""
    base = _local_path(out)
    links: list[str | None] = []
    for p in paths:
        local = _local_path(p) if isinstance(p, str) and p else None
        if base is None or local is None:
            links.append(None)
            continue
        rel = os.path.relpath(local, base).replace(os.sep, "/")
        links.append(quote(rel, safe="/"))
    return links


def nearest_on_map(xy: np.ndarray, n: int) -> tuple[list[list[int]], list[list[float]]]:
    """The ``n`` nearest other points of each point in 2-D map coordinates (Euclidean);
    points without coordinates get none and are never listed."""
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(xy).all(axis=1))
    rows: list[list[int]] = [[] for _ in range(len(xy))]
    dists: list[list[float]] = [[] for _ in range(len(xy))]
    k = min(n, len(finite) - 1)
    if k <= 0:
        return rows, dists
    d, j = cKDTree(xy[finite]).query(xy[finite], k=k + 1)
    for own, drow, jrow in zip(finite, d, j, strict=True):
        pairs = [(finite[b], a) for a, b in zip(drow, jrow, strict=True) if finite[b] != own]
        rows[own] = [int(r) for r, _ in pairs[:k]]
        dists[own] = [round(float(a), 4) for _, a in pairs[:k]]
    return rows, dists


def nearest_in_matrix(X: np.ndarray, n: int) -> tuple[list[list[int]], list[list[float]]]:
    """The ``n`` most similar other rows of each row by cosine similarity (the space the
    clusters were fitted in, exact FAISS inner product), with the distance ``1 - cosine``."""
    import faiss

    Xn = np.nan_to_num(np.array(X, dtype=np.float32, copy=True), nan=0.0, posinf=0.0, neginf=0.0)
    faiss.normalize_L2(Xn)
    index = faiss.IndexFlatIP(Xn.shape[1])
    index.add(Xn)
    k = min(n, len(Xn) - 1)
    if k <= 0:
        return [[] for _ in range(len(Xn))], [[] for _ in range(len(Xn))]
    sim, idx = index.search(Xn, k + 1)
    rows, dists = [], []
    for own, (srow, irow) in enumerate(zip(sim, idx, strict=True)):
        pairs = [(int(j), float(v)) for j, v in zip(irow, srow, strict=True) if j not in (own, -1)]
        rows.append([j for j, _ in pairs[:k]])
        dists.append([round(1.0 - v, 4) for _, v in pairs[:k]])
    return rows, dists
