"""Per-track pooling of window (or patch) outputs: seed 001's chunk_average and chunk_level."""

from __future__ import annotations

import numpy as np

from soundclust_ray.embed.base import WindowOutputs

POOLS = ("mean", "max", "mean_std")
"""mean_std: the mean then the (population) std over windows, twice the width."""
STRATEGIES = ("chunk_average", "chunk_level")


def pool_rows(x: np.ndarray, how: str) -> np.ndarray:
    """(n, d) rows → one float32 vector: mean (d), max (d) or mean_std (2d)."""
    if how == "max":
        return x.max(axis=0).astype(np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    if how == "mean_std":
        return np.concatenate([mean, x.std(axis=0, dtype=np.float64)]).astype(np.float32)
    return mean.astype(np.float32)


def _reduce(x: np.ndarray, how: str) -> np.ndarray:
    return pool_rows(x, how)[None, :]


def pool_windows(outputs: WindowOutputs, how: str = "mean") -> WindowOutputs:
    """One row per track: the mean (seed 001's chunk_average), max or mean+std over windows.

    Tags are pooled the same way as the embeddings (the mean for mean_std). Raises ValueError
    on an unknown ``how`` or a track without windows.
    """
    if how not in POOLS:
        raise ValueError(f"unknown pooling {how!r}; known: {', '.join(POOLS)}")
    if outputs.embeddings.shape[0] == 0:
        raise ValueError("no windows to pool")
    tag_how = "mean" if how == "mean_std" else how
    tags = None if outputs.tags is None else _reduce(outputs.tags, tag_how)
    return WindowOutputs(embeddings=_reduce(outputs.embeddings, how), tags=tags)


def check_strategy(strategy: str) -> str:
    """Validate a strategy name early, with the known ones in the message."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown embedding strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return strategy
