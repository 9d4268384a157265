"""The contract every embedding backend implements, so one pair of stages serves them all.

A backend is split along the CPU/device line of the pipeline: ``prepare`` turns a decoded mono
signal into what the model eats (pure numpy, runs in CPU tasks next to the decoder), and
``embed_tracks`` runs the model on a list of prepared tracks, batching their windows across
tracks so the accelerator sees full batches however short each track is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class EmbedderLoadError(RuntimeError):
    """A model could not be loaded; the message says what was tried and how to fix it."""


@dataclass
class WindowOutputs:
    """What a model returns for one track: one row per window (CLAP) or patch (musicnn)."""

    embeddings: np.ndarray
    """(n_windows, dim) float32."""
    tags: np.ndarray | None = None
    """(n_windows, n_tags) float32 probabilities, or None for models without tags."""


@runtime_checkable
class Preparer(Protocol):
    """The CPU half of a backend: decode rate and signal → model input, no model weights needed."""

    sample_rate: int

    def prepare(self, y: np.ndarray) -> np.ndarray:
        """Deterministic, pure numpy: the mono signal at ``sample_rate`` → model input."""
        ...


@runtime_checkable
class AudioEmbedder(Protocol):
    """A loaded model: ``prepare`` on CPU, ``embed_tracks`` on its device."""

    name: str
    """"clap" | "musicnn"; shards go to OUT/embeddings/<name>/."""
    sample_rate: int
    dim: int
    tag_names: tuple[str, ...]
    """Empty when the model has no tags."""

    def prepare(self, y: np.ndarray) -> np.ndarray:
        """CPU side (see :class:`Preparer`); CLAP: (n_windows, window_samples) float32."""
        ...

    def embed_tracks(self, prepared: list[np.ndarray]) -> list[WindowOutputs]:
        """Device side: batches across tracks, inference mode, one output per track in order."""
        ...
