"""Per-track pooling of window (or patch) outputs: seed 001's chunk_average and chunk_level."""

from __future__ import annotations

import numpy as np

from soundclust_ray.embed.base import WindowOutputs

POOLS = ("mean", "max")
STRATEGIES = ("chunk_average", "chunk_level")


def _reduce(x: np.ndarray, how: str) -> np.ndarray:
    if how == "mean":
        return x.mean(axis=0, dtype=np.float64, keepdims=True).astype(np.float32)
    return x.max(axis=0, keepdims=True).astype(np.float32)


def pool_windows(outputs: WindowOutputs, how: str = "mean") -> WindowOutputs:
    """One row per track: the mean (seed 001's chunk_average) or max over windows.

    Tags are pooled the same way as the embeddings. Raises ValueError on an unknown ``how``
    or a track without windows.
    """
    if how not in POOLS:
        raise ValueError(f"unknown pooling {how!r}; known: {', '.join(POOLS)}")
    if outputs.embeddings.shape[0] == 0:
        raise ValueError("no windows to pool")
    tags = None if outputs.tags is None else _reduce(outputs.tags, how)
    return WindowOutputs(embeddings=_reduce(outputs.embeddings, how), tags=tags)


def check_strategy(strategy: str) -> str:
    """Validate a strategy name early, with the known ones in the message."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown embedding strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return strategy
