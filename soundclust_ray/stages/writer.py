"""The shard writer: stage output → shards of at most ``shard_rows`` tracks (+ error shards).

The writer is the last step of every product's pipeline. Each stage declares the columns it
writes as ``(pattern, arrow type)`` pairs (:data:`ColumnSpec`); the writer builds the shard's
schema from that declaration, so a column's type never depends on the values of one batch, and
a column nobody declared is a bug that fails loudly instead of landing in OUT.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import outdir, shards
from soundclust_ray.config import RunConfig
from soundclust_ray.stages.base import ERROR_FIELDS, NODE_FIELD, family_batch
from soundclust_ray.stages.passes import unnest

EMBEDDING_TYPE = "embedding"
"""Declared type of a fixed-size list<float32> column; its size is the model's output width."""

ColumnSpec = tuple[tuple[str, object], ...]
"""A stage's written columns: (fnmatch pattern, arrow type or EMBEDDING_TYPE); first match wins."""


def declared_type(spec: ColumnSpec, name: str) -> object:
    """The type a stage declared for column ``name``; TypeError when it declared none."""
    for pattern, arrow_type in spec:
        if fnmatch.fnmatchcase(name, pattern):
            return arrow_type
    raise TypeError(f"column {name!r} is not declared by the stage that wrote it")


def column_array(arrow_type: object, values: np.ndarray) -> pa.Array:
    """Arrow array of one shard column, converted to its declared type."""
    if arrow_type == EMBEDDING_TYPE:
        return shards.embedding_array(np.asarray(values, dtype=np.float32))
    if pa.types.is_string(arrow_type):
        return pa.array(np.asarray(values).astype(str), type=arrow_type)
    return pa.array(np.asarray(values).astype(arrow_type.to_pandas_dtype()), type=arrow_type)


def shard_table(batch: dict[str, np.ndarray], columns: list[str], spec: ColumnSpec) -> pa.Table:
    """The value columns of ``batch`` as a table with the stage's declared schema."""
    arrays = [column_array(declared_type(spec, c), batch[c]) for c in columns]
    return pa.Table.from_arrays(arrays, names=columns)


def error_table(batch: dict[str, np.ndarray], failed: np.ndarray) -> pa.Table:
    """The failed rows of ``batch`` in the errors schema."""
    n = int(failed.sum())
    paths = np.asarray(batch["path"])[failed] if "path" in batch else np.full(n, "")
    values = {
        "track_id": np.asarray(batch["track_id"])[failed],
        "path": paths,
        "stage": np.asarray(batch["error_stage"])[failed],
        "error_type": np.asarray(batch["error_type"])[failed],
        "message": np.asarray(batch["error_message"])[failed],
    }
    return pa.table({k: pa.array(np.asarray(v).astype(str)) for k, v in values.items()})


class ShardWriter:
    """Commit every batch of stage output before returning: rows into shards of ``product`` of
    at most ``shard_rows`` tracks, failed tracks into an error shard.

    A batch is whatever block reaches the writer (a few tracks on a small corpus, up to
    ``PoolConfig.max_block_rows`` on a large one). Its rows join the shard being filled, which
    is rewritten in place (atomically, same name: the previous version stays listed until the
    new one replaces it) until it holds ``shard_rows`` tracks; then the next shard starts. So no
    row waits in the writer for more rows or for a timer: Ray Data gives a UDF no call at the
    end of the stream, so rows held past a call would be lost at the normal end of every run,
    and a ``ray job stop``, a killed driver or a crash loses only work that had not reached the
    writer yet; a resubmit skips every track of every call that returned. Shards are cut at
    track boundaries, so a multi-row track (``features_chunks``) is never split across shards.
    The price is rewriting a filling shard on a small corpus (blocks smaller than
    ``shard_rows``); a large corpus sends blocks of at least ``shard_rows`` tracks.

    Returns one summary row per input track (track_id, ok, node_id) so the driver can count
    without holding any feature values.
    """

    def __init__(
        self,
        out: str,
        product: str,
        config_hash: str,
        spec: ColumnSpec,
        shard_rows: int = RunConfig.shard_rows,
    ):
        self.out = out
        self.product = product
        self.config_hash = config_hash
        self.spec = spec
        self.shard_rows = max(1, int(shard_rows))
        self._filling: pa.Table | None = None
        """Rows of the shard being filled (committed, fewer than ``shard_rows`` tracks)."""
        self._filling_path: str | None = None
        self._lock = threading.Lock()
        """Ray runs one call at a time per actor by default; the lock keeps it so if not."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fs, base = outdir.resolve(self.out)
        failed = np.asarray(batch["error_type"]).astype(str) != ""
        track_ids = np.asarray(batch["track_id"]).astype(str)
        if (~failed).any():
            columns = [c for c in batch if c not in (*ERROR_FIELDS, NODE_FIELD, "path")]
            rows = {c: np.asarray(batch[c])[~failed] for c in columns}
            with self._lock:
                self._commit(fs, base, shard_table(rows, columns, self.spec))
        if failed.any():
            name = f"{self.product.replace('/', '-')}-{os.urandom(8).hex()}.parquet"
            target = outdir.join(base, outdir.ERRORS_DIR, name)
            outdir.write_table_atomic(fs, target, error_table(batch, failed), self.config_hash)
        ok_tracks = set(track_ids[~failed].tolist())
        first = ~pd.Series(track_ids).duplicated().to_numpy()
        return {
            "track_id": track_ids[first],
            "ok": np.array([t in ok_tracks for t in track_ids[first]]),
            NODE_FIELD: np.asarray(batch[NODE_FIELD]).astype(str)[first],
        }

    def _commit(self, fs, base: str, table: pa.Table) -> None:
        """Write ``table``'s rows after the shard being filled: full shards of ``shard_rows``
        tracks, then the rest as the (rewritten) shard being filled."""
        rows = table if self._filling is None else pa.concat_tables([self._filling, table])
        track = pd.factorize(rows.column("track_id").to_numpy(zero_copy_only=False))[0]
        n_tracks = int(track.max()) + 1
        path = self._filling_path or shards.new_shard_path(base, self.product)
        first = 0
        while first < n_tracks:
            last = min(first + self.shard_rows, n_tracks)
            part = rows.filter(pa.array((track >= first) & (track < last)))
            outdir.write_table_atomic(fs, path, part, self.config_hash)
            if last - first == self.shard_rows:
                self._filling, self._filling_path = None, None
                path = shards.new_shard_path(base, self.product)
            else:
                self._filling, self._filling_path = part, path
            first = last


PRODUCT_FIELD = "product"
"""Column of a :class:`PassShardWriter` summary: which product folder the row counts for."""


@dataclass(frozen=True)
class PassTarget:
    """Where one product of a pass is written."""

    key: str
    """The product's key in the pass batch (``stages.passes.pass_key``)."""
    folder: str
    """Its folder under OUT: the product's own, or its ``--recompute`` staging folder."""
    config_hash: str
    spec: ColumnSpec
    """The columns its own stage declares (FeatureStage, ClassicChunkStage or EmbedStage)."""
    nested: bool
    """Its rows are nested per track (``stages.passes.nest``); False for a feature family."""


class PassShardWriter:
    """The shard writer of a run's pass (``stages.passes``): each product's batch, taken back
    out of the pass batch, goes to that product's own :class:`ShardWriter`, so its shards,
    config hash and error shards stay apart although one decode fed them all.

    Returns one summary row per (product folder, track computed for it): track_id, ok,
    node_id and ``product``.
    """

    def __init__(
        self, out: str, targets: tuple[PassTarget, ...], shard_rows: int = RunConfig.shard_rows
    ):
        self.writers = [
            (t, ShardWriter(out, t.folder, t.config_hash, t.spec, shard_rows)) for t in targets
        ]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = []
        for target, writer in self.writers:
            key = target.key
            part = unnest(batch, key) if target.nested else family_batch(batch, key)
            if len(part["track_id"]):
                summary = writer(part)
                folder = np.full(len(summary["track_id"]), target.folder, dtype=object)
                parts.append({**summary, PRODUCT_FIELD: folder})
        keys = ("track_id", "ok", NODE_FIELD, PRODUCT_FIELD)
        if not parts:
            return {k: np.empty(0, dtype=bool if k == "ok" else object) for k in keys}
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in keys}
