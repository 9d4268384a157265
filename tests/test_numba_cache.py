"""UMAP's numba code is cached in the per-user folder, so a second process pays no compile."""

from __future__ import annotations

import subprocess
import sys

from soundclust_ray import numba_cache

FIT = (
    "import numpy as np; from soundclust_ray.analysis.projection import fit_umap_2d; "
    "from soundclust_ray.config import AnalysisConfig; "
    "X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32); "
    "print(fit_umap_2d(X, AnalysisConfig())[0][:2].tolist())"
)


def fit_in_fresh_process() -> str:
    done = subprocess.run([sys.executable, "-c", FIT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def cached_umap_files(cache) -> set[str]:
    return {p.name for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc") and "umap" in str(p)}


def test_umap_functions_are_cached_and_reused_with_identical_results():
    """In the real per-user folder (earlier UMAP fits of the suite may have filled it: then
    both processes load; run alone, the first compiles and writes)."""
    cache = numba_cache.cache_dir()
    first = fit_in_fresh_process()
    assert any(name.endswith(".nbi") for name in cached_umap_files(cache))
    mtimes = {p: p.stat().st_mtime_ns for p in cache.rglob("*.nbi") if "umap" in str(p)}
    second = fit_in_fresh_process()
    assert second == first  # the cached code gives the same seeded map
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*.nbi") if "umap" in str(p)}
    assert after == mtimes  # loaded, not compiled and rewritten
