"""CPU stage: one MSD HDF5 file per track → seed 004's statistics per analysis field + metadata.

Reads ``track_id, path``; writes ``track_id``, every ``msd_<field>__<stat>`` column (float32),
``artist``, ``title`` and ``year`` (strings; the year "" when unknown) and the error fields.
Metadata stays text in the shards so that the driver's matrix, which takes every numeric
column, holds only the statistics; ``sources.msd.add_msd_metadata_to_manifest`` gives the
manifest a float ``year``.
A plain callable class: there is no model to load, so the pipeline may run it as tasks or actors.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from soundclust_ray.config import RunConfig
from soundclust_ray.sources.msd_h5 import (
    META_COLUMNS,
    msd_columns,
    msd_track_row,
)
from soundclust_ray.stages.base import TRACK_COLUMNS, Resources, map_tracks

STAGE_NAME = "msd"


def msd_resources(cfg: RunConfig) -> Resources:
    """One CPU per worker; files take milliseconds, so batches are larger than audio batches."""
    return Resources(num_cpus=1.0, batch_size=cfg.msd.batch_size)


class MsdStage:
    """Statistics of the configured MSD analysis fields for a batch of files."""

    NAME = STAGE_NAME
    READS = TRACK_COLUMNS
    WRITES = (
        ("track_id", pa.string()),
        *((name, pa.string()) for name in META_COLUMNS),
        ("msd_*__*", pa.float32()),
    )
    resources = staticmethod(msd_resources)

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg.msd
        self.columns = msd_columns(cfg.msd)
        self.fill: dict[str, object] = dict.fromkeys(self.columns, float("nan"))
        self.fill.update(artist="", title="", year="")

    def compute_track(self, track_id: str, path: str) -> list[dict[str, object]]:
        """One output row; raises MsdTrackError for a non-MSD file or a missing field."""
        return [msd_track_row(path, self.cfg)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return map_tracks(batch, self.compute_track, STAGE_NAME, self.fill)
