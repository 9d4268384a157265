"""CPU stage: one MSD HDF5 file per track → seed 004's statistics per analysis field + metadata.

Reads ``track_id, path``; writes ``track_id``, every ``msd_<field>__<stat>`` column (float32),
``artist`` and ``title`` (strings), ``year`` (float32, NaN when unknown) and the error fields.
A plain callable class: there is no model to load, so the pipeline may run it as tasks or actors.
"""

from __future__ import annotations

import numpy as np

from soundclust_ray.config import RunConfig
from soundclust_ray.sources.msd import msd_columns, msd_track_row
from soundclust_ray.stages.base import Resources, map_tracks

STAGE_NAME = "msd"


def msd_resources(cfg: RunConfig) -> Resources:
    """One CPU per worker; files take milliseconds, so batches are larger than audio batches."""
    return Resources(num_cpus=1.0, batch_size=cfg.msd.batch_size)


class MsdStage:
    """Statistics of the configured MSD analysis fields for a batch of files."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg.msd
        self.columns = msd_columns(cfg.msd)
        self.fill: dict[str, object] = dict.fromkeys(self.columns, float("nan"))
        self.fill.update(artist="", title="", year=float("nan"))

    def compute_track(self, track_id: str, path: str) -> list[dict[str, object]]:
        """One output row; raises MsdTrackError for a non-MSD file or a missing field."""
        return [msd_track_row(path, self.cfg)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = map_tracks(batch, self.compute_track, STAGE_NAME, self.fill)
        out["year"] = np.asarray(out["year"], dtype=np.float32)
        return out
