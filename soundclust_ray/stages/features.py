"""CPU actor stage: decode each track once per sample rate, compute the requested families.

Reads ``track_id, path``; writes ``track_id`` + every ``family__name`` column (float32) + the
error fields. An actor (not a task) because essentia algorithm graphs and librosa's filter-bank
caches are built once per worker and reused across tracks.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from soundclust_ray import outdir
from soundclust_ray.audio import load_audio
from soundclust_ray.audio.errors import TrackError
from soundclust_ray.audio.probe import probe_duration
from soundclust_ray.config import RunConfig
from soundclust_ray.features.classic import classic_columns, compute_classic_chunks
from soundclust_ray.features.jit_cache import warm_jit_caches
from soundclust_ray.features.registry import (
    compute_family,
    decode_rates,
    feature_columns,
    get_families,
)
from soundclust_ray.stages.base import TRACK_COLUMNS, Resources, map_tracks

STAGE_NAME = outdir.FEATURES
CHUNK_STAGE_NAME = outdir.FEATURE_CHUNKS


class NonFiniteFeatureError(TrackError):
    """A feature came out NaN or infinite; the track is reported instead of poisoning the matrix."""


def feature_resources(cfg: RunConfig) -> Resources:
    """One CPU per actor; the pipeline sizes the pool to the cluster's CPUs."""
    return Resources(num_cpus=1.0, batch_size=cfg.batch_size)


class FeatureStage:
    """Decode + signal features for a batch of tracks (the Ray Data callable-class pattern)."""

    NAME = STAGE_NAME
    READS = TRACK_COLUMNS
    WRITES = (("track_id", pa.string()), ("*__*", pa.float32()))
    resources = staticmethod(feature_resources)

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.families = get_families(cfg.features.families)
        self.columns = feature_columns(cfg.features)
        self.rates = decode_rates(self.families, cfg.features)
        warm_jit_caches(cfg.features.families)

    def compute_track(self, track_id: str, path: str) -> list[dict[str, float]]:
        """All requested feature columns of one track; raises on any per-track problem."""
        audio = self.cfg.audio
        signals = {
            rate: load_audio(path, rate, audio.max_duration_s, audio.min_duration_s)
            for rate in self.rates
        }
        row: dict[str, float] = {}
        for family in self.families:
            row.update(compute_family(family, signals, self.cfg.features))
        values = np.array([row[c] for c in self.columns], dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            names = [c for c, b in zip(self.columns, bad, strict=True) if b]
            raise NonFiniteFeatureError(f"non-finite values in {', '.join(names[:5])}")
        return [row]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fill = dict.fromkeys(self.columns, float("nan"))
        return map_tracks(batch, self.compute_track, STAGE_NAME, fill)


class ClassicChunkStage:
    """One row per classic 5 s chunk (``--chunk-level``): track_id, chunk_index, classic columns."""

    NAME = CHUNK_STAGE_NAME
    READS = TRACK_COLUMNS
    WRITES = (("track_id", pa.string()), ("chunk_index", pa.int32()), ("*__*", pa.float32()))
    resources = staticmethod(feature_resources)

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.columns = classic_columns(cfg.features.classic)
        warm_jit_caches(("classic",))

    def compute_track(self, track_id: str, path: str) -> list[dict[str, float]]:
        classic = self.cfg.features.classic
        y = load_audio(
            path, classic.sample_rate, self.cfg.audio.max_duration_s, self.cfg.audio.min_duration_s
        )
        rows = compute_classic_chunks(y, classic.sample_rate, classic)
        return [{"chunk_index": i, **row} for i, row in enumerate(rows)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fill = {"chunk_index": -1, **dict.fromkeys(self.columns, float("nan"))}
        return map_tracks(batch, self.compute_track, CHUNK_STAGE_NAME, fill)


def probe_durations(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Task: header durations of a batch of tracks (NaN where unreadable)."""
    return {
        "track_id": batch["track_id"],
        "duration_s": np.array([probe_duration(str(p)) for p in batch["path"]], dtype=np.float64),
    }
