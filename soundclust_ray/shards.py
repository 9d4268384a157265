"""The on-disk format between the pipeline and the driver: Parquet shards under OUT.

Layout of an output folder::

    OUT/run.json                       config, config hash, inputs, counts, timings
    OUT/manifest.parquet               every input row: track_id, path, metadata columns
    OUT/features/<family>/part-*.parquet   one product per feature family: track_id + flat
                                       float32 ``family__name`` columns
    OUT/features/part-*.parquet        an MSD run's statistics (one product)
    OUT/embeddings/<backend>/part-*.parquet   track_id [+ window_index] + ``embedding``
                                       fixed_size_list<float32> [+ ``tag__*`` float32]
    OUT/errors/<product>-*.parquet     one row per failed track and stage (while running)
    OUT/errors.parquet                 all of them, consolidated at the end of a run

Shards are written under a temporary name and renamed (``outdir.write_table_atomic``), so a
killed run never leaves a half file that a rerun would trust; each carries the producing config
hash in its metadata. Writing and reading go through pyarrow filesystems, so OUT may be a local
path or a URI; the folder names are :mod:`soundclust_ray.outdir`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from soundclust_ray.outdir import (  # noqa: F401 - the shard format's filesystem helpers
    CONFIG_HASH_KEY,
    FEATURES,
    SHARD_PREFIX,
    feature_product,
    join,
    resolve,
    write_table_atomic,
)

ERROR_COLUMNS = ("track_id", "path", "stage", "error_type", "message")
ERROR_SCHEMA = pa.schema([(name, pa.string()) for name in ERROR_COLUMNS])
EMBEDDING_COLUMN = "embedding"


def new_shard_path(out: str, product: str) -> str:
    """A fresh, unique shard path for a product ('features' or 'embeddings/<backend>')."""
    return join(out, product, f"{SHARD_PREFIX}{uuid.uuid4().hex}.parquet")


def list_shards(out: str, product: str) -> list[str]:
    """Committed shard files of a product (temporary files are skipped), sorted."""
    fs, base = resolve(out)
    folder = join(base, product)
    info = fs.get_file_info(folder)
    if info.type == pafs.FileType.NotFound:
        return []
    sel = pafs.FileSelector(folder, recursive=False)
    return sorted(
        f.path
        for f in fs.get_file_info(sel)
        if f.type == pafs.FileType.File and f.base_name.startswith(SHARD_PREFIX)
    )


def feature_products(out: str) -> list[str]:
    """Every feature product of OUT with a committed shard: ``features`` itself (an MSD run's,
    or an older OUT's not yet upgraded by a run) and each ``features/<family>``, by name.

    The analysis joins them on track_id into one feature matrix."""
    fs, base = resolve(out)
    found = [FEATURES] if list_shards(out, FEATURES) else []
    sel = pafs.FileSelector(join(base, FEATURES), recursive=False, allow_not_found=True)
    families = sorted(
        i.base_name for i in fs.get_file_info(sel) if i.type == pafs.FileType.Directory
    )
    return found + [feature_product(f) for f in families if list_shards(out, feature_product(f))]


def read_column(out: str, product: str, column: str = "track_id") -> pa.Array:
    """One column of every shard of a product, read without the rest (resume, counting)."""
    fs, _ = resolve(out)
    paths = list_shards(out, product)
    if not paths:
        return pa.array([], type=pa.string())
    dataset = pads.dataset(paths, filesystem=fs, format="parquet")
    return dataset.to_table(columns=[column]).column(column).combine_chunks()


def iter_shard_tables(
    out: str, product: str, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """Stream a product's shards one file at a time, so memory holds one shard plus the result."""
    fs, _ = resolve(out)
    for path in list_shards(out, product):
        yield pq.read_table(path, filesystem=fs, columns=columns)


def shard_config_hashes(out: str, product: str) -> set[str]:
    """Config hashes recorded in a product's shards (a resume refuses to mix them)."""
    fs, _ = resolve(out)
    hashes = set()
    for path in list_shards(out, product):
        with fs.open_input_file(path) as f:
            meta = pq.read_schema(f).metadata or {}
        if CONFIG_HASH_KEY in meta:
            hashes.add(meta[CONFIG_HASH_KEY].decode())
    return hashes


def embedding_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A (n, d) float32 matrix as a fixed_size_list<float32>[d] Arrow array (no row copies)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = matrix.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), d)


def embedding_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed_size_list<float32> column back to an (n, d) float32 matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    d = column.type.list_size
    return (
        column.flatten()
        .to_numpy(zero_copy_only=False)
        .reshape(-1, d)
        .astype(np.float32, copy=False)
    )
