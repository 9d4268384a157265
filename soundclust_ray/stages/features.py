"""CPU actor stage: decode each track once, compute its pending families.

Reads ``track_id, path`` [+ ``families``]; writes ``track_id`` + every ``family__name`` column
(float32) + per family ``<family>@todo`` and error fields (``stages.base.family_batch`` cuts
out one family's product batch). An actor (not a task) because essentia algorithm graphs and
librosa's filter-bank caches are built once per worker and reused across tracks.
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
    FeatureFamily,
    compute_family,
    decode_rates,
    get_families,
)
from soundclust_ray.stages.base import (
    ERROR_FIELDS,
    NODE_FIELD,
    TODO_FIELD,
    TRACK_COLUMNS,
    Decoded,
    Resources,
    current_node_id,
    decode_track,
    error_message,
    family_field,
    map_tracks,
)

STAGE_NAME = outdir.FEATURES
CHUNK_STAGE_NAME = outdir.FEATURE_CHUNKS


class NonFiniteFeatureError(TrackError):
    """A feature came out NaN or infinite; the track is reported instead of poisoning the matrix."""


def feature_resources(cfg: RunConfig) -> Resources:
    """One CPU per actor; the pipeline sizes the pool to the cluster's CPUs."""
    return Resources(num_cpus=1.0, batch_size=cfg.batch_size)


class FeatureStage:
    """Decode + signal features for a batch of tracks (the Ray Data callable-class pattern).

    Each family is its own product (``features/<family>``), but one stage computes every
    family a run still needs, from one decode (resampled to each rate the families read): a
    row's optional ``families`` column (comma-separated) says which families are pending for
    that track (default: all of the stage's). The output carries each family's columns and its
    own ``<family>@todo`` and error fields (``stages.base.family_batch`` cuts one product's
    batch out of it), so one family's failure (a NaN feature) never costs another family its row.
    """

    NAME = STAGE_NAME
    READS = TRACK_COLUMNS
    WRITES = (("track_id", pa.string()), ("*__*", pa.float32()))
    resources = staticmethod(feature_resources)

    def __init__(self, cfg: RunConfig, families: tuple[str, ...] | None = None):
        self.cfg = cfg
        names = tuple(families or cfg.features.families)
        self.families = get_families(names)
        self.columns = {f.name: f.columns(cfg.features) for f in self.families}
        warm_jit_caches(names)

    def rates(self, wanted: list[str] | None = None) -> list[int]:
        """The sample rates the stage's families read (only those named in ``wanted``)."""
        families = [f for f in self.families if wanted is None or f.name in wanted]
        return decode_rates(families, self.cfg.features)

    def compute_track(self, decoded: Decoded, wanted: list[FeatureFamily]) -> dict[str, object]:
        """family name → its columns of one decoded track, or the exception that stopped it
        (a decode failure, ``decoded`` an exception, stops every family)."""
        if isinstance(decoded, Exception):
            return dict.fromkeys((f.name for f in wanted), decoded)
        return {f.name: self._family_row(f, decoded) for f in wanted}

    def _family_row(self, family: FeatureFamily, signals: dict) -> dict[str, float] | Exception:
        try:
            row = compute_family(family, signals, self.cfg.features)
            columns = self.columns[family.name]
            values = np.array([row[c] for c in columns], dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                names = [c for c, b in zip(columns, bad, strict=True) if b]
                raise NonFiniteFeatureError(f"non-finite values in {', '.join(names[:5])}")
            return row
        except Exception as exc:  # noqa: BLE001 - failures are data (stages/base.py)
            return exc

    def pending(self, batch: dict[str, np.ndarray]) -> list[list[str]]:
        """Per row, the names of the families pending for the track (its ``families`` column,
        or all of the stage's)."""
        names = [f.name for f in self.families]
        pending = batch.get("families")
        if pending is None:
            return [names] * len(batch["track_id"])
        return [str(p).split(",") for p in pending]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded = [
            decode_track(str(path), self.rates(wanted), self.cfg.audio)
            for path, wanted in zip(batch["path"], self.pending(batch), strict=True)
        ]
        return self.family_columns(batch, decoded)

    def family_columns(self, batch: dict[str, np.ndarray], decoded: list[Decoded]) -> dict:
        """The output batch of tracks already decoded (``decoded[i]``: rate → samples at
        :meth:`rates` of its pending families at least, or the decode's exception), one row
        per track."""
        names = [f.name for f in self.families]
        out: dict[str, list] = {"track_id": [], NODE_FIELD: []}
        for name in names:
            out.update({c: [] for c in self.columns[name]})
            for field in (TODO_FIELD, *ERROR_FIELDS):
                out[family_field(name, field)] = []
        node = current_node_id()
        rows = zip(batch["track_id"], self.pending(batch), decoded, strict=True)
        for track_id, wanted, signals in rows:
            results = self.compute_track(signals, [f for f in self.families if f.name in wanted])
            out["track_id"].append(str(track_id))
            out[NODE_FIELD].append(node)
            for name in names:
                self._append(out, name, results.get(name))
        return {k: np.asarray(v, dtype=_dtype(k)) for k, v in out.items()}

    def _append(self, out: dict[str, list], name: str, result) -> None:
        """One row of family ``name``: its values (NaN when not computed or failed), whether
        it was computed, and its error fields."""
        row = result if isinstance(result, dict) else {}
        for column in self.columns[name]:
            out[column].append(row.get(column, float("nan")))
        error = ("", "", "")
        if isinstance(result, Exception):
            error = (STAGE_NAME, result.__class__.__name__, error_message(result))
        out[family_field(name, TODO_FIELD)].append(result is not None)
        for field, value in zip(ERROR_FIELDS, error, strict=True):
            out[family_field(name, field)].append(value)


def _dtype(column: str) -> type:
    """A FeatureStage output column's numpy type: features float32, todo flags bool, text."""
    if "__" in column:
        return np.float32
    return bool if column.endswith(family_field("", TODO_FIELD)) else object


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
        audio, rate = self.cfg.audio, self.cfg.features.classic.sample_rate
        y = load_audio(path, rate, audio.max_duration_s, audio.min_duration_s)
        return self.chunk_rows(y)

    def chunk_rows(self, y: np.ndarray) -> list[dict[str, float]]:
        """One row per classic chunk of a track decoded at the classic rate."""
        classic = self.cfg.features.classic
        rows = compute_classic_chunks(y, classic.sample_rate, classic)
        return [{"chunk_index": i, **row} for i, row in enumerate(rows)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return map_tracks(batch, self.compute_track, CHUNK_STAGE_NAME, self.fill)

    @property
    def fill(self) -> dict[str, object]:
        """The columns of a failed track's row (see ``stages.base.map_tracks``)."""
        return {"chunk_index": -1, **dict.fromkeys(self.columns, float("nan"))}


def probe_durations(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Task: header durations of a batch of tracks (NaN where unreadable)."""
    return {
        "track_id": batch["track_id"],
        "duration_s": np.array([probe_duration(str(p)) for p in batch["path"]], dtype=np.float64),
    }
