"""Driver analysis at scale: seconds per step, peak memory and time growth, against the seed style.

Synthetic clustered data (sklearn make_blobs, float32, 20 centres) at 10k, 100k and 1M rows x 512
columns (``--quick``: 10k and 100k) is written as feature shards under a temporary OUT, then

- **ours**: ``analyze(OUT)`` in a fresh process (sampled HDBSCAN/UMAP fits with every other
  row assigned out of sample, MiniBatchKMeans above 20k rows, blocked scaling): seconds of every
  step from metrics.json, measured at every size (nothing extrapolated), and the process's peak
  RSS against the matrix bytes (goal: peak <= 3x matrix + 1 GiB);
- **seed style** (seed 002): every step fitted on all rows (StandardScaler, KMeans n_init=10,
  HDBSCAN, UMAP, PCA, silhouette on all rows), each step in its own process capped by
  ``--budget`` seconds (2 shared cores here: a capped step is reported as "> budget" and not
  retried at larger sizes).

Numba compilation (UMAP, pynndescent) is warmed up before any timing in each process.
Usage: ``.venv/bin/python bench/analysis.py [--quick] [--sizes 10000,100000] [--dims 200]
[--budget 60] [--no-seed]``; a million rows, every step: ``--sizes 1000000 --dims 200 --no-seed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CENTRES = 20
SEED = 42


def make_matrix(n: int, d: int, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """make_blobs rows generated in chunks straight into a float32 matrix (bounded memory)."""
    from sklearn.datasets import make_blobs

    rng = np.random.default_rng(SEED)
    centres = rng.uniform(-10, 10, size=(CENTRES, d))
    X = np.empty((n, d), dtype=np.float32)
    y = np.empty(n, dtype=np.int32)
    for i, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        Xc, yc = make_blobs(n_samples=m, centers=centres, cluster_std=3.0, random_state=SEED + i)
        X[start : start + m] = Xc
        y[start : start + m] = yc
    return X, y


def write_out(out: str, n: int, d: int, embeddings: bool, rows_per_shard: int = 50_000) -> None:
    """Manifest + feature shards (or ``embeddings/bench`` shards) of the synthetic matrix
    (untimed preparation)."""
    import pyarrow as pa

    from soundclust_ray import outdir, shards

    X, y = make_matrix(n, d)
    ids = np.array([f"t{i:08d}" for i in range(n)], dtype=object)
    fs, base = shards.resolve(out)
    manifest = pa.table(
        {"track_id": ids, "path": ids, "centre": pa.array([f"c{v:02d}" for v in y])}
    )
    shards.write_table_atomic(fs, f"{base}/manifest.parquet", manifest)
    names = [f"bench__f{j:03d}" for j in range(d)]
    product = outdir.embeddings_product("bench") if embeddings else outdir.FEATURES
    for start in range(0, n, rows_per_shard):
        sl = slice(start, start + rows_per_shard)
        cols = {"track_id": pa.array(ids[sl])}
        if embeddings:
            cols[shards.EMBEDDING_COLUMN] = shards.embedding_array(X[sl])
        else:
            block = np.ascontiguousarray(X[sl].T)
            for j, name in enumerate(names):
                cols[name] = pa.array(block[j])
        shards.write_table_atomic(fs, shards.new_shard_path(base, product), pa.table(cols))


def warm_numba() -> None:
    """Compile UMAP's numba code (fit and transform) before anything is timed."""
    import warnings

    import umap

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(300, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = umap.UMAP(n_neighbors=10, random_state=SEED).fit(Z[:200])
        model.transform(Z[200:])


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker_ours(out: str, k: int | str, neighbours: bool) -> dict:
    from soundclust_ray.analysis.driver import analyze
    from soundclust_ray.config import AnalysisConfig

    warm_numba()
    base = rss_bytes()
    t0 = time.perf_counter()
    cfg = dataclasses.replace(AnalysisConfig(), k=k, hdbscan=neighbours, umap=neighbours)
    m = analyze(out, cfg, label_col="centre", progress=False)
    total = time.perf_counter() - t0
    return {
        "seconds": m["seconds_per_stage"],
        "total": total,
        "peak_rss": peak_rss_bytes(),
        "base_rss": base,
        "nmi": m.get("nmi"),
        "hdbscan": m.get("hdbscan"),
        "umap": m.get("umap"),
        "peak_after_step": (m.get("memory") or {}).get("peak_rss_gib_after_step", {}),
    }


def worker_seed(step: str, n: int, d: int, k: int) -> dict:
    """One seed-style step on all rows (seed 002 cells), timed."""
    import warnings

    from sklearn.preprocessing import StandardScaler

    if step == "umap":
        warm_numba()
    X, _ = make_matrix(n, d)
    base = rss_bytes()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Xs = StandardScaler().fit_transform(X)
        t_scale = time.perf_counter() - t0
        t0 = time.perf_counter()
        if step == "scale":
            pass
        elif step == "kmeans":
            from sklearn.cluster import KMeans

            KMeans(n_clusters=k, random_state=SEED, n_init=10).fit_predict(Xs)
        elif step == "hdbscan":
            import hdbscan

            hdbscan.HDBSCAN(min_cluster_size=4, min_samples=2).fit_predict(Xs)
        elif step == "umap":
            import umap

            umap.UMAP(n_neighbors=10, min_dist=0.1, random_state=SEED).fit_transform(Xs)
        elif step == "pca":
            from sklearn.decomposition import PCA

            PCA(n_components=2, random_state=SEED).fit_transform(Xs)
        elif step == "silhouette":
            from sklearn.metrics import silhouette_score

            labels = np.arange(n) % k
            silhouette_score(Xs, labels)
    seconds = t_scale if step == "scale" else time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss": peak_rss_bytes(), "base_rss": base}


def run_worker(args: list[str], timeout: float | None) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


SEED_STEPS = ("scale", "kmeans", "hdbscan", "umap", "pca", "silhouette")
OUR_STEPS = (
    "gather",
    "kmeans",
    "oof kmeans",
    "neighbour pca",
    "hdbscan",
    "umap",
    "pca map",
    "metrics",
    "summaries",
    "report",
)


def bench_out_of_sample(fit_rows: int, query_rows: int, ref_rows: int, dims: int) -> None:
    """HDBSCAN's out-of-sample assignment: ours (clustering.assign_hdbscan, serial and as Ray
    tasks) against hdbscan.approximate_predict on the same fitted model, in this run."""
    import hdbscan

    from soundclust_ray.analysis import clustering
    from soundclust_ray.config import AnalysisConfig

    X, _ = make_matrix(fit_rows + query_rows, dims)
    fit, query = X[:fit_rows], X[fit_rows:]
    ms = 2
    t0 = time.perf_counter()
    model = hdbscan.HDBSCAN(min_cluster_size=4, min_samples=ms, prediction_data=True).fit(fit)
    print(f"fit {fit_rows:,} x {dims}: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    ref, _ = hdbscan.approximate_predict(model, query[:ref_rows])
    ref_per_row = (time.perf_counter() - t0) / ref_rows
    tree = clustering.hdbscan_tree(model, ms)
    t0 = time.perf_counter()
    exact, _ = clustering.assign_hdbscan(tree, query)
    exact_per_row = (time.perf_counter() - t0) / query_rows
    t0 = time.perf_counter()
    tree = clustering.with_search_index(tree, AnalysisConfig())
    ours, _ = clustering.assign_hdbscan(tree, query)
    ours_per_row = (time.perf_counter() - t0) / query_rows
    agree = float(np.mean(ours[:ref_rows] == ref))
    print(
        f"approximate_predict {ref_rows:,} rows: {ref_per_row * 1e3:.3f} ms/row; ours, exact "
        f"search {exact_per_row * 1e3:.4f} ms/row = {ref_per_row / exact_per_row:.1f}x faster; "
        f"ours, IVF search (the default above {AnalysisConfig().hdbscan_ivf_above:,} fitted rows, "
        f"index build included) {ours_per_row * 1e3:.4f} ms/row = "
        f"{ref_per_row / ours_per_row:.1f}x faster, same label as exact on "
        f"{float(np.mean(ours == exact)):.5f} of {query_rows:,} rows and as approximate_predict "
        f"on {agree:.4f} of the reference rows"
    )
    import ray

    from soundclust_ray.ray_executor import RayExecutor

    ray.init(include_dashboard=False)
    rows = [np.arange(i, min(i + 50_000, query_rows)) for i in range(0, query_rows, 50_000)]
    job = functools.partial(clustering.assign_hdbscan_rows, tree, query)
    timings = {}
    for name, ex in (("serial", clustering.SERIAL), ("ray", RayExecutor())):
        t0 = time.perf_counter()
        ex.map(job, rows)
        timings[name] = time.perf_counter() - t0
    ray.shutdown()
    print(
        f"{len(rows)} batches: serial {timings['serial']:.1f} s, Ray tasks {timings['ray']:.1f} s "
        f"= {timings['serial'] / timings['ray']:.2f}x on {os.cpu_count()} cores"
    )


def every_step(r: dict) -> str:
    """Each analysis step's seconds in the order it ran, and what no step accounts for."""
    steps = {k: v for k, v in r["seconds"].items() if k not in ("features", "manifest")}
    rest = r["total"] - sum(steps.values())
    return ", ".join(f"{k} {v:.1f}" for k, v in steps.items()) + f"; outside the steps {rest:.1f} s"


def peak_steps(after: dict) -> str:
    """The steps that raised the process's peak RSS, by how much (GiB)."""
    raised, last = [], 0.0
    for step, peak in after.items():
        if peak is not None and peak > last + 0.05:
            raised.append(f"{step} +{peak - last:.2f} -> {peak:.2f}")
            last = peak
    return ", ".join(raised) or "none"


def gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10k and 100k rows only")
    p.add_argument("--sizes", help="comma-separated row counts (overrides --quick)")
    p.add_argument("--dims", type=int, default=512, help="columns (default 512)")
    p.add_argument(
        "--k", default=str(CENTRES), help="k-means clusters, or auto (k selection; default 20)"
    )
    p.add_argument(
        "--embeddings",
        action="store_true",
        help="write the rows as an embedding backend (centred + L2) instead of features",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds allowed per seed-style step (default 60)",
    )
    p.add_argument("--no-seed", action="store_true", help="skip the seed-style reference")
    p.add_argument("--keep", help="write the OUT folders under this folder and keep them")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    p.add_argument(
        "--oos",
        metavar="FIT,QUERY,REF",
        help="only HDBSCAN's out-of-sample assignment: fit rows, query rows, rows timed\n"
        "with approximate_predict (e.g. 50000,1000000,5000; columns from --dims)",
    )
    a = p.parse_args()
    if a.oos:
        bench_out_of_sample(*(int(v) for v in a.oos.split(",")), dims=a.dims)
        return

    if a.worker:
        kind = a.worker[0]
        if kind == "ours":
            k = a.worker[2] if a.worker[2] == "auto" else int(a.worker[2])
            res = worker_ours(a.worker[1], k, a.worker[3] == "1")
        else:
            res = worker_seed(a.worker[1], int(a.worker[2]), int(a.worker[3]), int(a.worker[4]))
        print("RESULT " + json.dumps(res, default=str))
        return

    sizes = (
        [int(s) for s in a.sizes.split(",")]
        if a.sizes
        else ([10_000, 100_000] if a.quick else [10_000, 100_000, 1_000_000])
    )
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    root.mkdir(parents=True, exist_ok=True)
    print(
        f"driver analysis bench: {a.dims} columns, k={a.k}, sizes {sizes}, "
        f"seed-style budget {a.budget:.0f} s/step, {os.cpu_count()} cores"
    )
    ours, seed = {}, {}
    timed_out: set[str] = set()
    try:
        for n in sizes:
            out = root / f"out-{n}"
            if out.exists():
                shutil.rmtree(out)
            t0 = time.perf_counter()
            write_out(str(out), n, a.dims, a.embeddings)
            print(f"\n[{n:,} rows] shards written in {time.perf_counter() - t0:.1f} s (untimed)")
            r = run_worker(["ours", str(out), str(a.k), "1"], None)
            ours[n] = r
            matrix = n * a.dims * 4
            print(f"  ours: total {r['total']:.1f} s; every step: {every_step(r)}")
            print(f"        peak RSS raised by: {peak_steps(r['peak_after_step'])}")
            for name in ("hdbscan", "umap"):
                info = r.get(name) or {}
                if info.get("seconds_out_of_sample") is not None:
                    print(
                        f"        {name}: fit {info['fitted_rows']:,} rows "
                        f"{info['seconds_fit']:.1f} s, out of sample "
                        f"{info['out_of_sample_rows']:,} rows {info['seconds_out_of_sample']:.1f} s"
                    )
            print(
                f"        peak RSS {gib(r['peak_rss'])} = {r['peak_rss'] / matrix:.2f}x matrix "
                f"({gib(matrix)}); above the pre-analysis baseline "
                f"{(r['peak_rss'] - r['base_rss']) / matrix:.2f}x; NMI vs centres {r['nmi']:.3f}"
            )
            bound = 3 * matrix + 2**30
            verdict = "within" if r["peak_rss"] <= bound else "ABOVE"
            print(f"        {verdict} the bound 3x matrix + 1 GiB = {gib(bound)}")
            if a.no_seed:
                continue
            seed[n] = {}
            for step in SEED_STEPS:
                if step in timed_out:
                    seed[n][step] = None
                    continue
                seed_k = str(CENTRES if a.k == "auto" else a.k)
                res = run_worker(["seed", step, str(n), str(a.dims), seed_k], a.budget + 60)
                if res is None or res["seconds"] > a.budget:
                    timed_out.add(step)
                    res = None
                seed[n][step] = res
            line = ", ".join(
                f"{s} {v['seconds']:.1f}" if v else f"{s} >{a.budget:.0f}"
                for s, v in seed[n].items()
            )
            peak = max((v["peak_rss"] for v in seed[n].values() if v), default=0)
            print(f"  seed style (all rows): {line}")
            if peak:
                print(f"        peak RSS of its steps {gib(peak)} = {peak / matrix:.2f}x matrix")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)

    print("\nsummary")
    for n, r in ours.items():
        s = seed.get(n, {})
        pairs = (
            ("kmeans", "kmeans"),
            ("hdbscan", "hdbscan"),
            ("umap", "umap"),
            ("pca map", "pca"),
            ("metrics", "silhouette"),
        )
        ratios = []
        for our_step, seed_step in pairs:
            sv = s.get(seed_step)
            ov = r["seconds"].get(our_step, 0.0)
            if sv:
                ratios.append(f"{our_step} {sv['seconds'] / max(ov, 1e-3):.1f}x")
            elif seed_step in s:
                ratios.append(f"{our_step} >{a.budget / max(ov, 1e-3):.1f}x")
        peak = r["peak_rss"] / (n * a.dims * 4)
        vs = f"; speed-up vs seed style: {', '.join(ratios)}" if ratios else ""
        print(f"  {n:>9,} rows: ours {r['total']:7.1f} s, peak {peak:.2f}x matrix{vs}")
    ns = sorted(ours)
    for lo, hi in zip(ns, ns[1:], strict=False):
        growth = ours[hi]["total"] / ours[lo]["total"]
        per_step = ", ".join(
            f"{s} {ours[hi]['seconds'].get(s, 0) / max(ours[lo]['seconds'].get(s, 0), 1e-3):.1f}x"
            for s in OUR_STEPS
        )
        print(
            f"  growth {lo:,} -> {hi:,} rows ({hi / lo:.0f}x rows): total {growth:.1f}x; {per_step}"
        )


if __name__ == "__main__":
    main()
