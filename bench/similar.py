"""Similar-track search: FAISS (exact IndexFlatIP, approximate IVF-Flat) against the blocked
numpy search soundclust used before FAISS, all measured in the same run on the same matrix.

The reference (``blocked_topk``, kept here verbatim in spirit) scores row blocks with
``argpartition`` and merges each block's top k. FAISS is timed one query at a time (``similar
--id``) and in batches (near-duplicates, many queries). Recall@k of the IVF index is measured
against the exact top k of the reference.

    .venv/bin/python bench/similar.py [--quick] [--rows N] [--dim D]

Default 1,000,000 x 512 float32 (2 GiB); --quick 100,000. Memory is the process's resident-set
growth while an index is built and held (FAISS allocates outside Python), and tracemalloc's peak
for the numpy reference's temporaries.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import psutil

from soundclust_ray.analysis.search import SearchIndex, build_faiss_index, l2_normalize_inplace
from soundclust_ray.config import RANDOM_STATE, SearchConfig

K = 10
BLOCK_ROWS = 65536
MIB = 2**20


def clustered_matrix(n: int, d: int, seed: int = 0, block: int = 65536) -> np.ndarray:
    """Rows around 1,000 random centres (like embeddings of a real corpus), built block-wise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d), dtype=np.float32)
    X = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        X[start:stop] = centres[rng.integers(0, 1000, stop - start)]
        X[start:stop] += rng.standard_normal((stop - start, d), dtype=np.float32)
    return X


def blocked_topk(X: np.ndarray, Q: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """The pre-FAISS exact search: per row block, argpartition the block's top k, merge."""
    m = len(Q)
    best_idx = np.empty((m, 0), dtype=np.int64)
    best_sim = np.empty((m, 0), dtype=np.float32)
    for start in range(0, len(X), BLOCK_ROWS):
        S = Q @ X[start : start + BLOCK_ROWS].T
        local = exclude - start
        inside = (local >= 0) & (local < S.shape[1])
        S[np.flatnonzero(inside), local[inside]] = -np.inf
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        all_idx = np.concatenate([best_idx, part + start], axis=1)
        all_sim = np.concatenate([best_sim, np.take_along_axis(S, part, 1)], axis=1)
        keep = np.argpartition(-all_sim, k - 1, axis=1)[:, :k]
        best_idx = np.take_along_axis(all_idx, keep, 1)
        best_sim = np.take_along_axis(all_sim, keep, 1)
    order = np.argsort(-best_sim, axis=1, kind="stable")
    return np.take_along_axis(best_idx, order, 1)


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / MIB


def time_reference(X, queries, batch):
    """(ids, q/s one at a time, q/s batched, peak MiB of temporaries) of the numpy search."""
    tracemalloc.start()
    t0 = time.perf_counter()
    single = np.vstack([blocked_topk(X, X[i : i + 1], K, np.array([i])) for i in queries])
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, len(queries), batch):
        rows = queries[start : start + batch]
        blocked_topk(X, X[rows], K, rows)
    t_batch = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / MIB
    tracemalloc.stop()
    return single, len(queries) / t_single, len(queries) / t_batch, peak


def time_index(si: SearchIndex, X, queries, batch):
    """(ids, q/s one at a time, q/s batched) of a FAISS index."""
    t0 = time.perf_counter()
    single = np.vstack([si.search(X[i : i + 1], K, exclude=np.array([i]))[0] for i in queries])
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, len(queries), batch):
        rows = queries[start : start + batch]
        si.search(X[rows], K, exclude=rows)
    t_batch = time.perf_counter() - t0
    return single, len(queries) / t_single, len(queries) / t_batch


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(approx, exact, strict=True)]))


def build(X, exact: bool, search: SearchConfig):
    before = rss_mib()
    t0 = time.perf_counter()
    index = build_faiss_index(X, exact, search, RANDOM_STATE)
    return (
        SearchIndex(np.arange(len(X)), index, {}, exact),
        time.perf_counter() - t0,
        rss_mib() - before,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64, help="queries per batched call")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    args = parser.parse_args()
    n = args.rows or (100_000 if args.quick else 1_000_000)
    n_queries = args.queries or (256 if args.quick else 128)
    t0 = time.perf_counter()
    X = l2_normalize_inplace(clustered_matrix(n, args.dim))
    print(
        f"matrix {n:,} x {args.dim} float32 ({X.nbytes / 2**30:.2f} GiB), "
        f"{time.perf_counter() - t0:.1f} s"
    )
    queries = np.random.default_rng(1).choice(n, n_queries, replace=False)
    ref_ids, ref_single, ref_batch, ref_peak = time_reference(X, queries, args.batch)
    print(
        f"{'search':<34}{'q/s single':>11}{'ratio':>8}{'q/s batch':>11}{'ratio':>8}"
        f"{'recall@10':>10}{'extra MiB':>11}{'build s':>9}"
    )

    def line(name, single, batch, rec, mib, seconds):
        print(
            f"{name:<34}{single:>11.1f}{single / ref_single:>8.2f}{batch:>11.1f}"
            f"{batch / ref_batch:>8.2f}{rec:>10.3f}{mib:>11.0f}{seconds:>9.1f}"
        )

    line("numpy blocked exact (reference)", ref_single, ref_batch, 1.0, ref_peak, 0.0)
    search = SearchConfig()
    flat, t_flat, mib_flat = build(X, True, search)
    ids, single, batch = time_index(flat, X, queries, args.batch)
    line("FAISS IndexFlatIP (exact)", single, batch, recall(ids, ref_ids), mib_flat, t_flat)
    del flat
    ivf, t_ivf, mib_ivf = build(X, False, search)
    for nprobe in args.nprobe:
        ivf.index.nprobe = nprobe
        ids, single, batch = time_index(ivf, X, queries, args.batch)
        name = f"FAISS IVF {ivf.index.nlist} cells nprobe={nprobe}"
        line(name, single, batch, recall(ids, ref_ids), mib_ivf, t_ivf)
    print(
        f"(default nprobe {search.ivf_nprobe}; extra MiB = resident growth holding the index, "
        "the matrix itself excluded; reference: tracemalloc peak of its temporaries)"
    )


if __name__ == "__main__":
    main()
