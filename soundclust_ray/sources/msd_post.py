"""The MSD source's post-step: seed 004's out-of-fold clustering of each field's statistics.

After the MSD stage has written OUT/features shards, ``run_msd_field_oof`` reads the ``msd_*``
columns back, clusters each field out of fold (``analysis.oof``, pure math) and writes
OUT/oof/<field>.parquet. Shard reading and OUT writing live here so ``analysis/`` never
imports a source.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import outdir, shards
from soundclust_ray.analysis.oof import OofParams, clamp_to_rows, dist_columns, fit_oof_kmeans
from soundclust_ray.config import RunConfig
from soundclust_ray.sources.msd_h5 import field_columns, msd_columns

OOF_META_KEY = b"soundclust.oof"
"""Schema metadata of a field table: the k and splits it was clustered with (after clamping)."""


def field_oof_table(frame: pd.DataFrame, cols: list[str], p: OofParams) -> pd.DataFrame | None:
    """One field's out-of-fold table (track_id, dist_00…, label), or None under 2 rows.

    Rows with a NaN statistic (error rows) are dropped and the rest ordered by ``track_id`` so
    two runs agree; splits and k are clamped to the rows (recorded in the frame's ``attrs``).
    """
    frame = frame[["track_id", *cols]].dropna().sort_values("track_id", kind="stable")
    if len(frame) < 2:
        return None
    p = clamp_to_rows(p, len(frame))
    dist, labels = fit_oof_kmeans(frame[cols].to_numpy(dtype=np.float64), p)
    table = pd.DataFrame(dist, columns=dist_columns(p.k))
    table.insert(0, "track_id", frame["track_id"].astype(str).to_numpy())
    table["label"] = labels
    table.attrs.update(k=p.k, n_splits=p.n_splits)
    return table


def msd_oof_tables(features: pd.DataFrame, cfg: RunConfig) -> dict[str, pd.DataFrame]:
    """Seed 004's per-field out-of-fold clustering of MSD statistics: {field: table}.

    ``features`` holds ``track_id`` and the ``msd_<field>__*`` columns. Fewer than 2 usable
    rows in a field give an empty dict, since no fold can be held out.
    """
    msd = cfg.msd
    params = OofParams.for_msd(msd, cfg.random_state)
    tables: dict[str, pd.DataFrame] = {}
    for name in msd.fields:
        cols = field_columns(name, msd.hist_bins)
        missing = [c for c in cols if c not in features.columns]
        if missing:
            raise ValueError(f"features lack the MSD columns of field {name!r} ({missing[0]}, …)")
        table = field_oof_table(features, cols, params)
        if table is None:
            return {}
        tables[name] = table
    return tables


def write_msd_oof(
    out: str, tables: dict[str, pd.DataFrame], config_hash: str | None = None
) -> list[str]:
    """Write each field's table atomically to OUT/oof/<field>.parquet; returns the paths."""
    paths = []
    for name, table in tables.items():
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        meta = {OOF_META_KEY: json.dumps(table.attrs).encode()}
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **meta})
        paths.append(outdir.write_table(out, outdir.oof_field_table(name), arrow, config_hash))
    return paths


def run_msd_field_oof(out: str, cfg: RunConfig, config_hash: str | None = None) -> list[str]:
    """Read the MSD statistics from OUT/features shards and write OUT/oof/<field>.parquet.

    Reads only ``track_id`` and the ``msd_*`` columns, shard by shard; returns the paths.
    """
    columns = ["track_id", *msd_columns(cfg.msd)]
    parts = [t.to_pandas() for t in shards.iter_shard_tables(out, outdir.FEATURES, columns)]
    if not parts:
        raise ValueError(f"no feature shards under {outdir.path(out, outdir.FEATURES)}")
    tables = msd_oof_tables(pd.concat(parts, ignore_index=True), cfg)
    return write_msd_oof(out, tables, config_hash)
