"""The batch of a run's one pass over its tracks: one decode per track feeds every product.

A pass batch has one row per track: ``track_id``, ``path``, ``node_id``, ``products`` (the keys
of the products still pending for the track, comma-separated) and, per product key ``k`` (a
feature family, ``features_chunks`` or an embedding backend: :func:`pass_key`), ``k@todo`` (the
track was computed for ``k``) and ``k@error_stage|type|message``. A family keeps its flat
``<family>__<name>`` columns (one row per track, ``stages.base.family_batch`` cuts it out).
Every other product emits several rows per track (classic chunks, embedding windows), so its
rows are *nested*: ``k@<column>`` holds, per track, the array of that track's rows
(:func:`nest`), which keeps the pass one row per track through every stage; the writer takes
each product's batch back out (:func:`unnest`) exactly as that product's own stage emits it.
"""

from __future__ import annotations

import numpy as np

from soundclust_ray.stages.base import (
    ERROR_FIELDS,
    FAMILY_SEP,
    NODE_FIELD,
    TODO_FIELD,
    family_field,
    ragged,
)

PRODUCTS_FIELD = "products"
"""Input column of a pass: the keys of the products pending for the track, comma-separated."""
PER_TRACK_FIELDS = ("track_id", "path", *ERROR_FIELDS, NODE_FIELD)
"""Fields of a product batch that are the track's, not its rows' values."""


def pass_key(product: str) -> str:
    """A product's key in a pass batch: its family, backend, or ``features_chunks``."""
    return product.split("/", 1)[1] if "/" in product else product


def pending_keys(batch: dict[str, np.ndarray]) -> list[list[str]]:
    """Per row, the product keys pending for the track."""
    return [[k for k in str(p).split(",") if k] for p in batch[PRODUCTS_FIELD]]


def nest(key: str, n_tracks: int, todo: np.ndarray, rows: dict[str, np.ndarray]) -> dict:
    """Pass columns of product ``key`` from its stage's output ``rows`` for the ``todo`` tracks.

    ``rows`` is what the product's stage returned for those tracks, in their order, each
    track's rows together (one row for a failed track). Tracks not in ``todo`` get no rows.
    """
    track_ids = np.asarray(rows["track_id"]).astype(str)
    new_track = np.r_[True, track_ids[1:] != track_ids[:-1]][: len(track_ids)]
    starts = np.flatnonzero(new_track)
    if len(starts) != int(todo.sum()):
        raise ValueError(f"{key}: {len(starts)} tracks of rows for {int(todo.sum())} tracks")
    bounds = np.r_[starts, len(track_ids)]
    where = np.flatnonzero(todo)
    out = {family_field(key, TODO_FIELD): todo.astype(bool)}
    for name in ERROR_FIELDS:
        column = np.full(n_tracks, "", dtype=object)
        column[where] = np.asarray(rows[name], dtype=object)[starts]
        out[family_field(key, name)] = column
    for name, values in rows.items():
        if name in PER_TRACK_FIELDS:
            continue
        values = np.asarray(values)
        column = [values[:0]] * n_tracks
        for track, (a, b) in zip(where, zip(bounds[:-1], bounds[1:], strict=True), strict=True):
            column[track] = values[a:b]
        out[family_field(key, name)] = ragged(column)
    return out


def unnest(batch: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    """Product ``key``'s batch, as its own stage emits it, out of a pass batch (its rows for
    the tracks computed for it; empty ``track_id`` when there are none)."""
    rows = np.flatnonzero(np.asarray(batch[family_field(key, TODO_FIELD)], dtype=bool))
    prefix = f"{key}{FAMILY_SEP}"
    skip = {family_field(key, f) for f in (TODO_FIELD, *ERROR_FIELDS)}
    nested = [c for c in batch if c.startswith(prefix) and c not in skip]
    if not rows.size or not nested:
        return {"track_id": np.empty(0, dtype=object)}
    counts = np.array([len(batch[nested[0]][i]) for i in rows])
    out = {
        field: np.repeat(np.asarray(batch[source], dtype=object)[rows], counts)
        for field, source in (
            ("track_id", "track_id"),
            ("path", "path"),
            *((f, family_field(key, f)) for f in ERROR_FIELDS),
            (NODE_FIELD, NODE_FIELD),
        )
    }
    for column in nested:
        out[column[len(prefix) :]] = np.concatenate([np.asarray(batch[column][i]) for i in rows])
    return out


def track_rows(batch: dict[str, np.ndarray], todo: np.ndarray) -> dict[str, np.ndarray]:
    """The ``track_id, path`` batch of the ``todo`` rows: a product stage's input."""
    return {k: np.asarray(batch[k], dtype=object)[todo] for k in ("track_id", "path")}
