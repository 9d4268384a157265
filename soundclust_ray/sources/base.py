"""The interface every input kind implements, and the options of one run.

A source says how to list its inputs as a manifest in OUT, which products it computes, how it
computes them, and what runs after them. ``run.py`` drives every source the same way: a new
input kind is one module implementing :class:`Source` and one line in ``sources/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from soundclust_ray.config import RunConfig

Say = Callable[[str], None]
"""Where a step reports progress: one line of text."""


@dataclass(frozen=True)
class RunOptions:
    """What one ``soundclust run`` was asked to do, beyond the computed config."""

    input_path: str
    out: str
    overwrite: bool = False
    allow_outside_root: bool = False
    limit: int | None = None
    label_col: str | None = None
    id_col: str | None = None
    path_col: str | None = None
    no_analysis: bool = False
    keep_clusters: bool = False
    """Place the new tracks into OUT's saved clustering instead of refitting (analysis/placing)."""
    recompute: tuple[str, ...] = ()
    """Products (``features/timbre``, ``embeddings/musicnn``…) computed again from scratch with
    this run's settings; their old shards are replaced once the new ones are written."""
    num_cpus: int | None = None
    address: str | None = None
    quiet: bool = False
    verbose: bool = False


@dataclass
class Listing:
    """A source's inputs once listed: the manifest (in memory or already in OUT) and its size."""

    n_rows: int
    frame: pd.DataFrame | None = None
    """Every input row with ``invalid_reason`` (sources that keep the manifest in memory)."""
    path: str | None = None
    """OUT's manifest file, for sources that stream a listing too large for memory."""
    extra: dict[str, Any] | None = None


class Source(Protocol):
    """An input kind: audio files, MSD HDF5 files, a feature table."""

    name: str
    needs_ray: bool
    """False when the source computes on the driver (no cluster to start)."""

    def list_inputs(self, opts: RunOptions, cfg: RunConfig, say: Say) -> Listing:
        """Check the input and list it; raises UserError for what the user can fix."""

    def products(self, cfg: RunConfig) -> list[str]:
        """The products this source computes under ``cfg`` (OUT's folder names)."""

    def pending(self, listing: Listing, opts: RunOptions, cfg: RunConfig) -> int | None:
        """(product, track) pairs still to compute, known from OUT without Ray (an OUT of
        another config is refused here, before Ray); None when only computing can tell."""

    def stage_modules(self, cfg: RunConfig) -> tuple[str, ...]:
        """The modules ``compute`` imports on the driver (its stage classes, which Ray Data
        sends to workers by reference); ``run`` imports them while Ray starts."""

    def compute(self, listing: Listing, opts: RunOptions, cfg: RunConfig, say: Say) -> dict:
        """Compute every product and write run.json; returns the run info."""

    def post_steps(self, opts: RunOptions, cfg: RunConfig, info: dict, say: Say) -> None:
        """What runs after the products (e.g. MSD's per-field out-of-fold tables)."""
