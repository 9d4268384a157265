"""``soundclust export``: a run's results in the files the seed notebooks wrote and read.

Formats (names as the seeds wrote them, so their downstream notebooks load them unchanged):

- ``npz``: per embedding backend, ``<backend>_embeddings.npz`` (raw, one mean-pooled vector per
  track) and ``<backend>_embeddings_normalized.npz`` (centred + L2, seed 000), each with arrays
  ``track_ids`` and ``embeddings``; ``features.npz`` with ``track_ids``, ``features``,
  ``columns``.
- ``npy``: ``<name>_vectors_<d>d.npy`` per matrix (seed 003: ``spotify_vectors_14d.npy`` for the
  tabular vectors) with ``id_to_index.json`` (track id → row; one file per matrix,
  ``id_to_index_<name>.json``, when their tracks differ), and seed 004's
  ``cluster_label_<field>.npy`` (n, 1) per out-of-fold field, plus
  ``cluster_label_kmeans.npy`` / ``cluster_label_hdbscan.npy`` in clusters.parquet's row order.
- ``csv``: seed 002's ``acoustic_embeddings_with_clusters.csv``: the manifest's metadata,
  ``file_name``, ``file_path``, the feature columns, ``cluster_kmeans``, ``cluster_hdbscan`` and
  the 2-D maps (``umap_x/y``, ``pca_x/y``).
- ``parquet``: the same joined table as ``tracks.parquet``.
- ``m3u``: one playlist per cluster, ``playlists/<kmeans|hdbscan>_<label>.m3u``, paths relative
  to the playlist, tracks ordered by cosine to their cluster's centre in the search geometry.

Nothing is written into OUT except under OUT/export/ (the default ``--to``) and, for ``m3u``,
the search index OUT/index/ when it is missing (the same one ``similar`` uses).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import outdir
from soundclust_ray.errors import UserError

FORMATS = ("npz", "npy", "csv", "m3u", "parquet")
TABULAR_BACKEND = "tabular"
SEED_CSV = "acoustic_embeddings_with_clusters.csv"
"""Seed 002's OUTPUT_CSV name."""
JOINED_PARQUET = "tracks.parquet"
PLAYLISTS = "playlists"
ID_TO_INDEX = "id_to_index.json"
CLUSTER_COLUMNS = {"kmeans": "cluster_kmeans", "hdbscan": "cluster_hdbscan"}
"""clusters.parquet's label columns and seed 002's names for them."""


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _ids(values: np.ndarray) -> np.ndarray:
    """Track ids as a fixed-width unicode array (np.load reads it without pickle)."""
    return np.asarray(values).astype(str)


def track_matrices(out: str) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """name → (track ids, one row per track, columns) for every product in OUT: ``features``
    and each embedding backend (``tabular`` too)."""
    from soundclust_ray.analysis import gather

    found = {}
    try:
        g = gather.pool_windows(gather.gather_features(out))
        found["features"] = (_ids(g.track_ids), g.X, list(g.columns))
    except FileNotFoundError:
        pass
    for backend in gather.embedding_backends(out):
        g = gather.pool_windows(gather.gather_embeddings(out, backend))
        found[backend] = (_ids(g.track_ids), g.X, list(g.columns))
    if not found:
        raise UserError(f"{out} has no feature or embedding shards to export")
    return found


def _clusters(out: str) -> pd.DataFrame:
    table = outdir.read_table(out, outdir.CLUSTERS)
    if table is None:
        raise UserError(f"{out} has no {outdir.CLUSTERS}: run `soundclust analyze {out}` first")
    return table.to_pandas()


def export_npz(out: str, to: str) -> list[str]:
    """Seed 000's raw and normalised embedding archives, and the features archive."""
    from soundclust_ray.embed.postprocess import center_and_normalize

    written = []
    for name, (ids, X, columns) in track_matrices(out).items():
        if name == "features":
            data = _npz_bytes(track_ids=ids, features=X, columns=np.asarray(columns))
            written.append(outdir.write_bytes(to, "features.npz", data))
            continue
        raw = _npz_bytes(track_ids=ids, embeddings=X)
        written.append(outdir.write_bytes(to, f"{name}_embeddings.npz", raw))
        if name != TABULAR_BACKEND:
            normal = _npz_bytes(track_ids=ids, embeddings=center_and_normalize(X))
            written.append(outdir.write_bytes(to, f"{name}_embeddings_normalized.npz", normal))
    return written


def export_npy(out: str, to: str) -> list[str]:
    """Seed 003's vectors + id_to_index.json, seed 004's cluster_label_<field>.npy."""
    matrices = track_matrices(out)
    same_ids = len({tuple(ids) for ids, _, _ in matrices.values()}) == 1
    written = []
    for name, (ids, X, _) in matrices.items():
        stem = "spotify" if name == TABULAR_BACKEND else name
        vectors = f"{stem}_vectors_{X.shape[1]}d.npy"
        written.append(outdir.write_bytes(to, vectors, _npy_bytes(X)))
        if not same_ids or not any(w.endswith(ID_TO_INDEX) for w in written):
            index_name = ID_TO_INDEX if same_ids else f"id_to_index_{name}.json"
            mapping = {str(t): i for i, t in enumerate(ids)}
            written.append(outdir.write_bytes(to, index_name, json.dumps(mapping).encode()))
    clusters = outdir.read_table(out, outdir.CLUSTERS)
    if clusters is not None:
        for column in CLUSTER_COLUMNS:
            labels = clusters.column(column).to_numpy().reshape(-1, 1)
            written.append(
                outdir.write_bytes(to, f"cluster_label_{column}.npy", _npy_bytes(labels))
            )
    for file_name in outdir.list_files(out, outdir.OOF_DIR):
        field = file_name.removesuffix(".parquet")
        table = outdir.read_table(out, outdir.oof_field_table(field), columns=["label"])
        labels = table.column("label").to_numpy().reshape(-1, 1)
        written.append(outdir.write_bytes(to, f"cluster_label_{field}.npy", _npy_bytes(labels)))
    return written


def joined_table(out: str) -> pd.DataFrame:
    """Seed 002's joined frame: metadata, file_name/file_path, features, clusters, 2-D maps."""
    clusters = _clusters(out).rename(columns=CLUSTER_COLUMNS)
    if "path" in clusters.columns:
        clusters.insert(1, "file_path", clusters["path"].astype(str))
        clusters.insert(1, "file_name", [os.path.basename(p) for p in clusters["file_path"]])
    matrices = track_matrices(out)
    if "features" in matrices:
        ids, X, columns = matrices["features"]
        features = pd.DataFrame(X, columns=columns)
        features.insert(0, "track_id", ids)
        clusters = clusters.merge(features, on="track_id", how="left")
    maps = [c for c in ("umap_x", "umap_y", "pca_x", "pca_y") if c in clusters.columns]
    labels = [c for c in CLUSTER_COLUMNS.values() if c in clusters.columns]
    rest = [c for c in clusters.columns if c not in maps + labels]
    return clusters[rest + labels + maps]


def export_csv(out: str, to: str) -> list[str]:
    data = joined_table(out).to_csv(index=False).encode()
    return [outdir.write_bytes(to, SEED_CSV, data)]


def export_parquet(out: str, to: str) -> list[str]:
    table = pa.Table.from_pandas(joined_table(out), preserve_index=False)
    return [outdir.write_table(to, JOINED_PARQUET, table)]


def centre_order(X: np.ndarray, labels: np.ndarray, label: int) -> np.ndarray:
    """Rows of one cluster, nearest its centre (mean of its L2-normalised rows) first."""
    rows = np.flatnonzero(labels == label)
    centre = X[rows].mean(axis=0)
    norm = np.linalg.norm(centre)
    cosine = X[rows] @ (centre / norm if norm > 0 else centre)
    return rows[np.argsort(-cosine, kind="stable")]


def playlist_text(paths: list[str], playlist_dir: str) -> str:
    """An extended M3U: local paths relative to the playlist's folder, URIs as they are."""
    lines = ["#EXTM3U"]
    for path in paths:
        remote = "://" in path
        lines.append(path if remote else os.path.relpath(os.path.abspath(path), playlist_dir))
    return "\n".join(lines) + "\n"


def export_m3u(out: str, to: str) -> list[str]:
    """One playlist per k-means and HDBSCAN cluster (noise excluded), centre first."""
    from soundclust_ray.analysis.search import open_index

    clusters = _clusters(out)
    si = open_index(out)
    rows = np.searchsorted(si.track_ids, clusters["track_id"].astype(str).to_numpy())
    X = si.index.reconstruct_n(0, si.index.ntotal)[np.clip(rows, 0, len(si.track_ids) - 1)]
    local_dir = outdir.path(to, PLAYLISTS) if "://" not in to else None
    written = []
    for column in CLUSTER_COLUMNS:
        labels = clusters[column].to_numpy()
        for label in sorted(set(labels[labels >= 0].tolist())):
            order = centre_order(X, labels, label)
            paths = clusters["path"].astype(str).to_numpy()[order].tolist()
            text = playlist_text(paths, local_dir or "/")
            name = f"{PLAYLISTS}/{column}_{label:03d}.m3u"
            written.append(outdir.write_bytes(to, name, text.encode()))
    return written


EXPORTERS = {
    "npz": export_npz,
    "npy": export_npy,
    "csv": export_csv,
    "m3u": export_m3u,
    "parquet": export_parquet,
}


def export(out: str, fmt: str, to: str | None = None) -> list[str]:
    """Write OUT's results in ``fmt`` under ``to`` (default OUT/export); returns the paths."""
    if fmt not in EXPORTERS:
        raise UserError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    if outdir.read_bytes(out, outdir.MANIFEST) is None:
        raise UserError(f"{out} has no {outdir.MANIFEST}: not the OUT of a soundclust run")
    return EXPORTERS[fmt](out, to or outdir.path(out, outdir.EXPORT))
