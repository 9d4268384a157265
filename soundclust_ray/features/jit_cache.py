"""Compile librosa's numba kernels once per machine, one process at a time.

librosa caches its ``@guvectorize(cache=True)`` kernels on disk, and numba writes each kernel's
two cache files with separate renames: when several processes compile the same kernel at once
(feature actors starting together on a fresh install) the pair can come from different
processes and every later load segfaults (numba/numba#10128, librosa/librosa#1998). Every
process that computes features first runs all families on a short signal under an exclusive
file lock, so exactly one process compiles and writes the cache and the others load it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

import numpy as np

from soundclust_ray.config import FeaturesConfig

LOCK_PATH = os.path.join(tempfile.gettempdir(), "soundclust_ray-numba-cache.lock")
WARMUP_SECONDS = 6.0

_warmed: set[tuple[str, ...]] = set()


def warmup_signal(sample_rate: int, seconds: float = WARMUP_SECONDS) -> np.ndarray:
    """A deterministic tone with clicks: exercises pitch, beat and onset kernels alike."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t)
    y[:: sample_rate // 2] += 0.9
    return y.astype(np.float32)


def warm_jit_caches(families: tuple[str, ...] | None = None) -> None:
    """Run the named feature families (default: all) through their real feature functions on
    a short signal under the lock, once per process and set of families."""
    from soundclust_ray.features.registry import (
        FAMILIES,
        compute_family,
        decode_rates,
        get_families,
    )

    names = tuple(FAMILIES) if families is None else tuple(families)
    if names in _warmed:
        return
    cfg = FeaturesConfig(families=names)
    selected = get_families(names)
    with open(LOCK_PATH, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            signals = {r: warmup_signal(r) for r in decode_rates(selected, cfg)}
            for family in selected:
                compute_family(family, signals, cfg)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _warmed.add(names)
