"""UMAP's and pynndescent's compiled code kept across runs, in a per-user cache folder.

Numba caches a function on disk only when its decorator says ``cache=True``; umap and
pynndescent mostly do not, so every fresh process compiled them again: fitting UMAP on 200
rows took 32 s in each new process on the 2-core CI-sized machine, 0.7 s once cached
(measured 2026-12-02, two fresh processes each). Before umap is imported, :func:`enable`
points numba's cache at ``$XDG_CACHE_HOME/soundclust_ray/numba`` (unless NUMBA_CACHE_DIR is
set) and makes ``cache=True`` the default of ``numba.jit``/``njit`` for functions that do not
choose; a function numba cannot cache is compiled as before.

Numba writes a cache entry as two files with separate renames, so two processes compiling
the same function at once can leave a mismatched pair (numba/numba#10128): the UMAP fit,
where the compiling happens, runs under :func:`compile_lock`, one process per machine at a
time — as ``features/jit_cache.py`` does for librosa's kernels.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".compile.lock"


def cache_dir() -> Path:
    """NUMBA_CACHE_DIR when set, else the per-user cache folder of soundclust_ray."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "soundclust_ray" / "numba"


def enable() -> None:
    """Persistent numba caching for the functions compiled from here on (idempotent)."""
    import numba
    from numba.core import config, decorators
    from numba.core.errors import NumbaWarning

    if getattr(decorators.jit, "_soundclust_cached", False):
        return
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    config.CACHE_DIR = str(folder)
    original = decorators.jit

    def jit(*args, **kwargs):
        kwargs.setdefault("cache", True)
        return original(*args, **kwargs)

    jit._soundclust_cached = True
    decorators.jit = numba.jit = jit
    warnings.filterwarnings(
        "ignore", message="Cannot cache compiled function", category=NumbaWarning
    )


@contextlib.contextmanager
def compile_lock() -> Iterator[None]:
    """One process of this machine at a time in the block (an exclusive file lock)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
