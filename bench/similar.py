"""Similar-track search: blocked exact top-k vs a naive full-matrix numpy search, same run.

The naive search is what one writes first: copy the matrix normalised (``X / norms``), then per
query score every row and ``argsort`` them all. The blocked search normalises in place and scores
row blocks with ``argpartition`` (``soundclust_ray.analysis.search.topk_cosine``), one query at a
time and in batches of queries. The optional IVF index is timed too, with its recall@k.

    .venv/bin/python bench/similar.py [--quick] [--rows N] [--dim D]

Default 1,000,000 × 512 float32 (2 GiB; the naive side needs 2 GiB more); --quick 100,000.
Prints queries/s, the ratio to naive, and peak extra memory (tracemalloc, beyond the matrix).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from soundclust_ray.analysis.search import IVFIndex, l2_normalize_inplace, topk_cosine

K = 10


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


def naive_search(X: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, float, int]:
    """Normalised copy + full scores + full argsort per query: (indices, seconds, peak bytes)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    out = []
    for i in queries:
        s = Xn @ Xn[i]
        s[i] = -np.inf
        out.append(np.argsort(-s)[:k])
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del Xn
    return np.array(out), seconds, peak


def blocked_search(
    X: np.ndarray, queries: np.ndarray, k: int, batch: int
) -> tuple[np.ndarray, float, float, int]:
    """In-place normalisation + blocked top-k: (indices, s single-query loop, s batched, peak)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    l2_normalize_inplace(X)
    single = [topk_cosine(X, X[i : i + 1], k, exclude=np.array([i]))[0][0] for i in queries]
    t_single = time.perf_counter() - t0
    t1 = time.perf_counter()
    batched = []
    for start in range(0, len(queries), batch):
        rows = queries[start : start + batch]
        batched.append(topk_cosine(X, X[rows], k, exclude=rows)[0])
    t_batched = time.perf_counter() - t1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(np.array(single), np.vstack(batched))
    return np.array(single), t_single, t_batched, peak


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64, help="queries per batched pass")
    parser.add_argument("--no-ivf", action="store_true")
    args = parser.parse_args()
    n = args.rows or (100_000 if args.quick else 1_000_000)
    n_queries = args.queries or (64 if args.quick else 32)
    t0 = time.perf_counter()
    X = clustered_matrix(n, args.dim)
    gib = X.nbytes / 2**30
    built = time.perf_counter() - t0
    print(f"matrix {n:,} × {args.dim} float32 ({gib:.2f} GiB) built in {built:.1f} s")
    queries = np.random.default_rng(1).choice(n, n_queries, replace=False)

    naive_idx, t_naive, peak_naive = naive_search(X, queries, K)
    fast_idx, t_single, t_batched, peak_fast = blocked_search(X, queries, K, args.batch)
    same = overlap(naive_idx, fast_idx)
    q_naive = n_queries / t_naive
    q_single = n_queries / t_single
    q_batched = n_queries / t_batched
    mib = 2**20
    print(f"{'search':<28}{'queries/s':>12}{'vs naive':>10}{'peak extra MiB':>16}")
    print(f"{'naive full-matrix numpy':<28}{q_naive:>12.2f}{1.0:>10.2f}{peak_naive / mib:>16.0f}")
    print(
        f"{'blocked, one query at a time':<28}{q_single:>12.2f}{q_single / q_naive:>10.2f}"
        f"{peak_fast / mib:>16.0f}"
    )
    print(f"{f'blocked, {args.batch} per pass':<28}{q_batched:>12.2f}{q_batched / q_naive:>10.2f}")
    print(f"top-{K} agreement with naive: {same:.4f} (1.0 = identical neighbour sets)")
    print("(the naive time includes its normalised copy; the blocked single-query time includes")
    print(" its in-place normalisation; both are one pass per matrix load)")

    if not args.no_ivf:
        t0 = time.perf_counter()
        index = IVFIndex(X)
        t_build = time.perf_counter() - t0
        for nprobe in (8, 32):
            t0 = time.perf_counter()
            approx, _ = index.search(X[queries], K, nprobe=nprobe, exclude=queries)
            t_ivf = time.perf_counter() - t0
            qps = n_queries / t_ivf
            print(
                f"IVF nlist={index.nlist} nprobe={nprobe}: {qps:.1f} queries/s "
                f"({qps / q_naive:.0f}× naive), recall@{K} {overlap(approx, fast_idx):.3f}, "
                f"build {t_build:.1f} s"
            )


if __name__ == "__main__":
    main()
