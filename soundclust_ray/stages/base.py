"""What every stage shares: resource declarations and turning per-track failures into data.

A stage is a callable class in the Ray Data pattern: ``__init__`` does the set-up once per
worker (models, algorithm graphs), ``__call__(batch)`` maps a numpy batch of columns to a numpy
batch of columns. Stages are plain Python: tests call them without Ray. Each declares, as class
attributes, its ``NAME`` (error rows, per-run resource overrides), the columns it ``READS``, the
columns it ``WRITES`` as (pattern, arrow type) pairs (the shard writer's schema), and
``resources(cfg, ...)``, the :class:`Resources` one worker asks for (NeMo Curator's pattern).

Every stage's output batch carries, besides its own columns, ``error_stage``, ``error_type`` and
``error_message`` (empty strings when the track succeeded) and ``node_id`` (where it ran), so
the shard writer can route failures to ``OUT/errors`` and the run can count work per node.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from soundclust_ray.audio import load_audio_rates
from soundclust_ray.config import AudioConfig
from soundclust_ray.ray_env import ray_running

TRACK_COLUMNS = ("track_id", "path")
"""What the first stage of every product reads from the manifest."""
ERROR_FIELDS = ("error_stage", "error_type", "error_message")
NODE_FIELD = "node_id"
FAMILY_SEP = "@"
"""``<family>@<field>``: a field of one family in a batch that carries several products."""
TODO_FIELD = "todo"
"""``<family>@todo``: the row computed that family (it was pending for the track)."""


def family_field(family: str, name: str) -> str:
    """Name of ``family``'s own copy of a per-row field (``timbre@error_type``)."""
    return f"{family}{FAMILY_SEP}{name}"


def family_batch(batch: dict[str, np.ndarray], family: str) -> dict[str, np.ndarray]:
    """One family's product batch out of a several-family batch: the rows that computed it,
    its ``family__*`` columns and its error fields under their usual names."""
    rows = np.asarray(batch[family_field(family, TODO_FIELD)], dtype=bool)
    prefix = f"{family}__"
    part = {"track_id": np.asarray(batch["track_id"])[rows]}
    part.update({c: np.asarray(v)[rows] for c, v in batch.items() if c.startswith(prefix)})
    for name in ERROR_FIELDS:
        part[name] = np.asarray(batch[family_field(family, name)])[rows]
    part[NODE_FIELD] = np.asarray(batch[NODE_FIELD])[rows]
    return part


def ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """An object array of per-track arrays (np.stack would fail or pad when shapes differ)."""
    column = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        column[i] = a
    return column


@dataclass(frozen=True)
class Resources:
    """Resources one worker of a stage asks Ray for, declared next to the stage."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 4
    concurrency: int | tuple[int, int] | None = None
    """Actor pool size (fixed or (min, max)); None lets the pipeline pick from the cluster."""


Decoded = dict[int, np.ndarray] | Exception
"""One track decoded once (sample rate → samples), or the exception that stopped its decode."""


def decode_track(path: str, rates, audio: AudioConfig) -> Decoded:
    """``path`` decoded once and resampled to each of ``rates`` (``audio``'s duration limits),
    or the exception: a failure is data for every product that wanted the track."""
    try:
        return load_audio_rates(path, rates, audio.max_duration_s, audio.min_duration_s)
    except Exception as exc:  # noqa: BLE001 - failures are data, see module docstring
        return exc


def current_node_id() -> str:
    """The Ray node this code runs on, or 'local' outside Ray (never imports Ray to find out)."""
    try:
        if ray_running():
            import ray

            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside a Ray worker there is simply no node id
        pass
    return "local"


def error_message(exc: BaseException) -> str:
    """One clear line for an error row: the message, plus its origin for unexpected types."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    from soundclust_ray.audio.errors import TrackError

    if not isinstance(exc, TrackError):
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            last = frames[-1]
            text = f"{text} (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
    return text[:2000]


def map_tracks(
    batch: dict[str, np.ndarray],
    compute: Callable[[str, str], Iterable[dict[str, object]]],
    stage: str,
    columns: dict[str, object],
) -> dict[str, np.ndarray]:
    """Apply ``compute(track_id, path)`` to each row and assemble an output batch.

    ``compute`` yields one or more output rows per track (several for chunk-level outputs);
    ``columns`` maps every output column to its fill value for failed tracks (NaN for floats).
    A track whose ``compute`` raises becomes one row with the fill values and the error fields
    set, so one bad track never stops a batch.
    """
    node = current_node_id()
    out: dict[str, list] = {name: [] for name in ("track_id", *columns, *ERROR_FIELDS, NODE_FIELD)}
    for track_id, path in zip(batch["track_id"], batch["path"], strict=True):
        track_id, path = str(track_id), str(path)
        try:
            rows = list(compute(track_id, path))
            if not rows:
                raise ValueError("produced no output")
        except Exception as exc:  # noqa: BLE001 - failures are data, see module docstring
            rows = [dict(columns)]
            error = (stage, exc.__class__.__name__, error_message(exc))
        else:
            error = ("", "", "")
        for row in rows:
            out["track_id"].append(track_id)
            for name, fill in columns.items():
                out[name].append(row.get(name, fill))
            for name, value in zip(ERROR_FIELDS, error, strict=True):
                out[name].append(value)
            out[NODE_FIELD].append(node)
    return {name: _to_array(values) for name, values in out.items()}


def _to_array(values: list) -> np.ndarray:
    if values and isinstance(values[0], np.ndarray):
        return np.stack(values)
    if values and isinstance(values[0], float | np.floating):
        return np.asarray(values, dtype=np.float32)
    if values and isinstance(values[0], str):
        return np.asarray(values, dtype=object)
    return np.asarray(values)
