"""Near-duplicate tracks: pairs whose cosine in the search geometry exceeds a threshold.

A re-encode of the same recording (mp3 → ogg/flac, another bitrate, a resampled copy) lands
almost on top of its original, while distinct songs — even of one genre — stay well below; the
threshold in ``config.AnalysisConfig.duplicate_threshold`` comes from that measurement
(bench/duplicates.py). The search is a FAISS range search of every stored row against the
index itself, in query batches, so memory is one batch of results plus the index.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import outdir
from soundclust_ray.config import AnalysisConfig, SearchConfig

PAIR_COLUMNS = ("track_id_a", "track_id_b", "cosine")


def near_duplicate_pairs(
    index, threshold: float, batch: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows a, rows b, cosine) of every pair a < b of an inner-product FAISS index over
    L2-normalised rows with cosine >= ``threshold``, sorted by a then b.

    The index must reconstruct its rows (IndexFlatIP, or IVF with a direct map); an IVF index
    finds only the pairs within its probed cells, which is what near-duplicates are.
    """
    found_a, found_b, found_s = [], [], []
    for start in range(0, index.ntotal, batch):
        count = min(batch, index.ntotal - start)
        queries = index.reconstruct_n(start, count)
        lims, sims, rows = index.range_search(queries, float(threshold))
        owner = np.repeat(np.arange(start, start + count), np.diff(lims).astype(np.int64))
        later = rows > owner
        found_a.append(owner[later])
        found_b.append(rows[later])
        found_s.append(sims[later])
    a = np.concatenate(found_a) if found_a else np.empty(0, dtype=np.int64)
    b = np.concatenate(found_b) if found_b else np.empty(0, dtype=np.int64)
    s = np.concatenate(found_s) if found_s else np.empty(0, dtype=np.float32)
    order = np.lexsort((b, a))
    return a[order].astype(np.int64), b[order].astype(np.int64), s[order].astype(np.float32)


def duplicate_table(track_ids: np.ndarray, a: np.ndarray, b: np.ndarray, s: np.ndarray) -> pa.Table:
    """The pairs as ``track_id_a``, ``track_id_b``, ``cosine`` (a's id sorts before b's)."""
    ids = np.asarray(track_ids).astype(str)
    return pa.table(
        {
            PAIR_COLUMNS[0]: pa.array(ids[a], pa.string()),
            PAIR_COLUMNS[1]: pa.array(ids[b], pa.string()),
            PAIR_COLUMNS[2]: pa.array(s, pa.float32()),
        }
    )


def pair_index(si, cfg: AnalysisConfig, search: SearchConfig):
    """The index to range-search: the search index itself, or above
    ``duplicates_exact_max_rows`` tracks an in-memory IVF over its rows when it is exact; an
    IVF visits ``duplicates_nprobe`` cells (copies this close share a cell)."""
    from soundclust_ray.analysis.search import ivf_of_exact_index

    if si.exact and si.index.ntotal <= cfg.duplicates_exact_max_rows:
        return si.index
    index = si.index
    if si.exact:
        index = ivf_of_exact_index(si.index, search, cfg.random_state)
    index.nprobe = min(cfg.duplicates_nprobe, index.nlist)
    return index


def write_duplicates(out: str, cfg: AnalysisConfig, matrix_info: dict | None = None) -> dict:
    """Find near-duplicates in the run's search index (built if needed) and write
    OUT/duplicates.parquet; returns the metrics.json entry (count, threshold, geometry).

    ``matrix_info``: the analysis's resolved matrix (metrics.json's ``matrix``), so the index
    built here is the one ``similar`` reuses.
    """
    from soundclust_ray.analysis.search import open_index, resolved_config

    search = SearchConfig()
    si = open_index(out, search=search, cfg=resolved_config(cfg, matrix_info or {}))
    index = pair_index(si, cfg, search)
    a, b, s = near_duplicate_pairs(index, cfg.duplicate_threshold, search.query_batch)
    outdir.write_table(out, outdir.DUPLICATES, duplicate_table(si.track_ids, a, b, s))
    return {
        "path": outdir.DUPLICATES,
        "n_pairs": int(len(a)),
        "n_tracks": int(len(np.union1d(a, b))),
        "threshold": float(cfg.duplicate_threshold),
        "matrix": si.source,
        "exact": index is si.index and si.exact,
    }


def read_duplicates(out: str) -> pd.DataFrame:
    """OUT/duplicates.parquet as a frame (empty with its columns when absent)."""
    table = outdir.read_table(out, outdir.DUPLICATES)
    if table is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PAIR_COLUMNS})
    return table.to_pandas()
