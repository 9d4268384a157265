"""Similar-track search by cosine similarity over any matrix a run wrote.

Exact search is blocked: the matrix is L2-normalised in place, in row blocks, and queries are
scored one block of rows at a time with ``argpartition`` keeping only each block's top k, so the
memory beyond the matrix itself is ``block_rows × n_queries`` floats (a naive search copies the
matrix to normalise it and scores all rows at once). :class:`IVFIndex` is an optional
approximate index (inverted lists over k-means cells, numpy + scikit-learn only) for
collections where a full pass per query is too slow.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from soundclust_ray import shards
from soundclust_ray.config import RANDOM_STATE

BLOCK_ROWS = 65536
"""Rows scored per block: 65536 × 64 queries × 4 bytes = 16 MiB of similarities."""
MATRICES = ("auto", "features", "embeddings", "tabular")
TABULAR_BACKEND = "tabular"
CLOSE_MATCHES = 5


@dataclass
class SearchMatrix:
    """L2-normalised rows and the track ids they belong to (sorted, unique)."""

    track_ids: np.ndarray
    X: np.ndarray
    source: str
    """Which matrix: ``features``, ``embeddings/<backend>`` or ``embeddings/tabular``."""

    def row_of(self, track_id: str) -> int:
        """Row index of a track id; ValueError listing close matches when it is unknown."""
        i = int(np.searchsorted(self.track_ids, track_id))
        if i < len(self.track_ids) and self.track_ids[i] == track_id:
            return i
        hits = np.flatnonzero(self.track_ids == track_id)
        if len(hits):
            return int(hits[0])
        raise ValueError(unknown_id_message(track_id, self.track_ids, self.source))


def unknown_id_message(track_id: str, track_ids: np.ndarray, source: str = "") -> str:
    """'unknown track id …; close matches: …' using substring hits first, then difflib."""
    query = str(track_id)
    lowered = query.lower()
    hits = [t for t in track_ids if lowered in str(t).lower()][: CLOSE_MATCHES * 20]
    pool = hits if hits else [str(t) for t in track_ids]
    close = difflib.get_close_matches(query, pool, n=CLOSE_MATCHES, cutoff=0.5)
    if not close and hits:
        close = hits[:CLOSE_MATCHES]
    where = f" in {source}" if source else ""
    text = f"unknown track id {query!r}{where} ({len(track_ids)} tracks)"
    return text + (f"; close matches: {', '.join(close)}" if close else "; no close matches")


def l2_normalize_inplace(X: np.ndarray, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Divide each row by its norm, block by block; a block holding non-finite values has them
    zeroed first, and zero rows stay zero. Returns X."""
    for start in range(0, len(X), block_rows):
        b = X[start : start + block_rows]
        norms = np.sqrt(np.einsum("ij,ij->i", b, b))
        if not np.isfinite(norms).all():
            np.nan_to_num(b, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            norms = np.sqrt(np.einsum("ij,ij->i", b, b))
        norms[norms == 0] = 1.0
        b /= norms[:, None]
    return X


def _merge_topk(
    best_idx: np.ndarray, best_sim: np.ndarray, idx: np.ndarray, sim: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k largest of two (m, ·) candidate sets."""
    all_idx = np.concatenate([best_idx, idx], axis=1)
    all_sim = np.concatenate([best_sim, sim], axis=1)
    if all_sim.shape[1] <= k:
        return all_idx, all_sim
    keep = np.argpartition(-all_sim, k - 1, axis=1)[:, :k]
    return np.take_along_axis(all_idx, keep, 1), np.take_along_axis(all_sim, keep, 1)


def topk_cosine(
    X: np.ndarray,
    Q: np.ndarray,
    k: int = 10,
    exclude: np.ndarray | None = None,
    block_rows: int = BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of L2-normalised ``X`` for each L2-normalised query row of ``Q``.

    Returns (indices (m, k) int64, similarities (m, k) float32), best first; ``exclude[j]`` is a
    row of X that query j must not return (itself), -1 for none. k is clamped to the rows left.
    """
    Q = np.atleast_2d(np.asarray(Q, dtype=np.float32))
    m, n = len(Q), len(X)
    k = min(k, n - (exclude is not None))
    if k <= 0:
        return np.empty((m, 0), dtype=np.int64), np.empty((m, 0), dtype=np.float32)
    best_idx = np.empty((m, 0), dtype=np.int64)
    best_sim = np.empty((m, 0), dtype=np.float32)
    for start in range(0, n, block_rows):
        S = Q @ X[start : start + block_rows].T
        if exclude is not None:
            local = exclude - start
            inside = (local >= 0) & (local < S.shape[1])
            S[np.flatnonzero(inside), local[inside]] = -np.inf
        if S.shape[1] > k:
            part = np.argpartition(-S, k - 1, axis=1)[:, :k]
            sim = np.take_along_axis(S, part, 1)
        else:
            part = np.broadcast_to(np.arange(S.shape[1]), S.shape)
            sim = S
        best_idx, best_sim = _merge_topk(best_idx, best_sim, part + start, sim, k)
    order = np.argsort(-best_sim, axis=1, kind="stable")
    return np.take_along_axis(best_idx, order, 1), np.take_along_axis(best_sim, order, 1)


class IVFIndex:
    """Approximate cosine search: spherical k-means cells over normalised rows; a query scores
    the rows of its ``nprobe`` nearest cells exactly.

    Centroids come from a few Lloyd iterations on a seeded sample (``sample_per_cell`` rows per
    cell), then every row is assigned block by block; building costs about one exact search
    per 4 cells. ``bench/similar.py`` reports recall against :func:`topk_cosine`.
    """

    def __init__(
        self,
        X: np.ndarray,
        nlist: int | None = None,
        sample_per_cell: int = 32,
        n_iter: int = 5,
        random_state: int = RANDOM_STATE,
        block_rows: int = BLOCK_ROWS,
    ):
        n = len(X)
        self.X = X
        nlist = min(n, nlist or max(1, int(np.sqrt(n))))
        rng = np.random.default_rng(random_state)
        sample = X[np.sort(rng.choice(n, size=min(n, nlist * sample_per_cell), replace=False))]
        centroids = sample[rng.choice(len(sample), size=nlist, replace=False)].copy()
        for _ in range(n_iter):
            labels = self._assign(sample, centroids, block_rows)
            sums = np.zeros_like(centroids, dtype=np.float64)
            np.add.at(sums, labels, sample)
            filled = np.bincount(labels, minlength=nlist) > 0
            centroids[filled] = sums[filled].astype(np.float32)
            l2_normalize_inplace(centroids)
        self.centroids = centroids
        self.nlist = nlist
        assign = self._assign(X, centroids, block_rows)
        self.order = np.argsort(assign, kind="stable")
        self.offsets = np.searchsorted(assign[self.order], np.arange(self.nlist + 1))

    @staticmethod
    def _assign(X: np.ndarray, centroids: np.ndarray, block_rows: int) -> np.ndarray:
        labels = np.empty(len(X), dtype=np.int64)
        for start in range(0, len(X), block_rows):
            labels[start : start + block_rows] = np.argmax(
                X[start : start + block_rows] @ centroids.T, axis=1
            )
        return labels

    def search(
        self, Q: np.ndarray, k: int = 10, nprobe: int = 8, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :func:`topk_cosine`, over the rows of the ``nprobe`` most similar cells."""
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float32))
        nprobe = min(nprobe, self.nlist)
        cells = np.argpartition(-(Q @ self.centroids.T), nprobe - 1, axis=1)[:, :nprobe]
        out_idx = np.full((len(Q), k), -1, dtype=np.int64)
        out_sim = np.full((len(Q), k), -np.inf, dtype=np.float32)
        for j, q in enumerate(Q):
            rows = np.concatenate(
                [self.order[self.offsets[c] : self.offsets[c + 1]] for c in cells[j]]
            )
            if exclude is not None and exclude[j] >= 0:
                rows = rows[rows != exclude[j]]
            sim = self.X[rows] @ q
            top = min(k, len(rows))
            if top == 0:
                continue
            part = np.argpartition(-sim, top - 1)[:top]
            part = part[np.argsort(-sim[part], kind="stable")]
            out_idx[j, :top] = rows[part]
            out_sim[j, :top] = sim[part]
        return out_idx, out_sim


def _tabular_present(out: str) -> bool:
    return bool(shards.list_shards(out, f"embeddings/{TABULAR_BACKEND}"))


def load_search_matrix(out: str, matrix: str = "auto") -> SearchMatrix:
    """Gather a run's matrix, prepare it for cosine search and normalise it in place.

    ``matrix``: ``tabular`` (seed 003 vectors, as written), ``embeddings`` or
    ``embeddings:<backend>`` (windows mean-pooled per track), ``features`` (standardized first:
    raw feature scales would let one column decide every similarity), or ``auto`` (tabular,
    else embeddings, else features).
    """
    from soundclust_ray.analysis.gather import (
        embedding_backends,
        gather_embeddings,
        gather_features,
        pool_windows,
    )
    from soundclust_ray.analysis.scaling import standardize_inplace

    kind, _, backend = matrix.partition(":")
    if kind not in MATRICES:
        raise ValueError(f"unknown matrix {matrix!r}: use one of {', '.join(MATRICES)}")
    audio_backends = [b for b in embedding_backends(out) if b != TABULAR_BACKEND]
    if kind == "auto":
        if _tabular_present(out):
            kind = "tabular"
        elif audio_backends:
            kind = "embeddings"
        else:
            kind = "features"
    if kind == "tabular":
        if not _tabular_present(out):
            raise ValueError(f"{out} has no tabular vectors (run with --source tabular)")
        g = gather_embeddings(out, TABULAR_BACKEND)
        source = f"embeddings/{TABULAR_BACKEND}"
    elif kind == "embeddings":
        if not audio_backends:
            raise ValueError(f"{out} has no embedding shards (run with --embed)")
        backend = backend or audio_backends[0]
        if backend not in audio_backends:
            raise ValueError(
                f"no embeddings/{backend} in {out} (found: {', '.join(audio_backends)})"
            )
        g = pool_windows(gather_embeddings(out, backend))
        source = f"embeddings/{backend}"
    else:
        try:
            g = pool_windows(gather_features(out))
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from exc
        standardize_inplace(g.X)
        source = "features"
    ids = g.track_ids.astype(str).astype(object)
    return SearchMatrix(ids, l2_normalize_inplace(g.X), source)


def similar_tracks(
    out: str,
    track_id: str,
    k: int = 10,
    matrix: str = "auto",
    approximate: bool = False,
    nprobe: int = 8,
) -> pd.DataFrame:
    """The k tracks most similar to ``track_id`` with their manifest metadata.

    Columns: ``rank`` (1 = nearest), ``track_id``, ``similarity`` (cosine), then the manifest's
    metadata columns. ``attrs`` holds the query, the matrix used and whether the search was exact.
    Unknown id → ValueError naming close matches. ``approximate`` builds an :class:`IVFIndex`
    (worth it only when many queries share one loaded matrix; one query is exact by default).
    """
    from soundclust_ray.analysis.gather import read_manifest

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    sm = load_search_matrix(out, matrix)
    row = sm.row_of(str(track_id))
    q = sm.X[row : row + 1]
    exclude = np.array([row])
    if approximate:
        idx, sim = IVFIndex(sm.X).search(q, k, nprobe=nprobe, exclude=exclude)
    else:
        idx, sim = topk_cosine(sm.X, q, k, exclude=exclude)
    keep = idx[0] >= 0
    result = pd.DataFrame(
        {
            "rank": np.arange(1, int(keep.sum()) + 1),
            "track_id": sm.track_ids[idx[0][keep]].astype(str),
            "similarity": sim[0][keep].astype(np.float64).round(6),
        }
    )
    manifest = read_manifest(out)
    meta = manifest.drop(columns=[c for c in ("invalid_reason",) if c in manifest.columns])
    result = result.merge(meta, on="track_id", how="left")
    result.attrs.update(query=str(track_id), matrix=sm.source, exact=not approximate)
    return result


def _cell(value: object, width: int) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_similar(df: pd.DataFrame, width: int = 40) -> str:
    """A plain-text table of :func:`similar_tracks` output.

    The path column and metadata columns that repeat the track id are left out; cells are
    clipped to ``width`` characters.
    """
    head = f"nearest to {df.attrs.get('query', '?')} by cosine similarity"
    if df.attrs.get("matrix"):
        exact = "exact" if df.attrs.get("exact", True) else "approximate"
        head += f" ({df.attrs['matrix']}, {exact})"
    if df.empty:
        return head + "\n(no other tracks)"
    same_as_id = [
        c
        for c in df.columns
        if c not in ("track_id", "rank", "similarity")
        and df[c].astype(str).tolist() == df["track_id"].astype(str).tolist()
    ]
    shown = df.drop(columns=[c for c in ("path", *same_as_id) if c in df.columns])
    cells = [[_cell(v, width) for v in shown.columns]]
    for rec in shown.itertuples(index=False):
        row = []
        for name, value in zip(shown.columns, rec, strict=True):
            row.append(f"{value:.4f}" if name == "similarity" else _cell(value, width))
        cells.append(row)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([head, *lines])


def format_similar_json(df: pd.DataFrame) -> str:
    """Strict JSON of :func:`similar_tracks` output: query, matrix, exact and the neighbours.

    Missing values become ``null`` (``DataFrame.to_json`` semantics), never a bare ``NaN``.
    """
    neighbours = json.loads(df.to_json(orient="records", date_format="iso"))
    payload = {
        "query": df.attrs.get("query"),
        "matrix": df.attrs.get("matrix"),
        "exact": df.attrs.get("exact", True),
        "neighbours": neighbours,
    }
    return json.dumps(payload, indent=2, ensure_ascii=False)
