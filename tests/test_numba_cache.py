"""UMAP's numba code is cached in the per-user folder, so a second process pays no compile."""

from __future__ import annotations

import os
import subprocess
import sys

FIT = (
    "import numpy as np; from soundclust_ray.analysis.projection import fit_umap_2d; "
    "from soundclust_ray.config import AnalysisConfig; "
    "X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32); "
    "print(fit_umap_2d(X, AnalysisConfig())[0][:2].tolist())"
)


def fit_in_fresh_process(cache: str) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    done = subprocess.run(
        [sys.executable, "-c", FIT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def cached_umap_files(cache) -> set[str]:
    return {p.name for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc") and "umap" in str(p)}


def test_umap_functions_are_cached_and_reused_with_identical_results(tmp_path):
    first = fit_in_fresh_process(str(tmp_path))
    files = cached_umap_files(tmp_path)
    assert any(name.endswith(".nbi") for name in files), sorted(files)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nbi")}
    second = fit_in_fresh_process(str(tmp_path))
    assert second == first  # the cached code gives the same seeded map
    assert {
        p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nbi")
    } == mtimes  # loaded, not rewritten
