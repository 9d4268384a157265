"""The one owner of OUT: every file and folder name in it, and atomic readers and writers.

Nothing else in the package spells a name of OUT or writes into it by hand. Every write goes
to a temporary name beside its target and is then moved into place, so a killed run never
leaves a half-written file that a later run or reader would trust. OUT may be a local path or
an ``s3://``, ``gs://`` or ``file://`` URI (pyarrow filesystems).

Layout::

    OUT/run.json                         config, hashes, inputs, counts, timings of the last run
    OUT/manifest.parquet                 every input row: track_id, path, metadata columns
    OUT/features/<family>/part-*.parquet one product per feature family: track_id + its
                                         float32 ``family__name`` columns
    OUT/features/part-*.parquet          an MSD run's statistics (one product)
    OUT/features_chunks/part-*.parquet   with --chunk-level: one row per classic chunk
    OUT/embeddings/<backend>/part-*.parquet   track_id + ``embedding`` [+ ``tag__*``]
    OUT/errors/<product>-*.parquet       failed tracks per product (while running)
    OUT/errors.parquet                   all failures, consolidated at the end of a run
    OUT/clusters.parquet, oof.parquet, oof/<field>.parquet, metrics.json,
    OUT/cluster_summaries.json, report.html, id_to_index.json   driver outputs
    OUT/corpus/                          the demo's synthesized audio
    OUT/index/<key>.faiss, <key>.ids.parquet, <key>.json   similar-track index (FAISS)
    OUT/duplicates.parquet               near-duplicate pairs above a cosine threshold
    OUT/fitted/                          fitted parameters for placing new tracks (no pickle)
    OUT/recompute/<product>/             ``--recompute PRODUCT``'s new shards until they replace
                                         the product's old ones
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

RUN = "run.json"
MANIFEST = "manifest.parquet"
ERRORS = "errors.parquet"
ERRORS_DIR = "errors"
FEATURES = "features"
FEATURE_CHUNKS = "features_chunks"
EMBEDDINGS = "embeddings"
CLUSTERS = "clusters.parquet"
OOF = "oof.parquet"
OOF_DIR = "oof"
METRICS = "metrics.json"
SUMMARIES = "cluster_summaries.json"
REPORT = "report.html"
ID_TO_INDEX = "id_to_index.json"
CORPUS = "corpus"
LOGS = "logs"
INDEX = "index"
"""Folder of the FAISS similar-track index (analysis/search.py), one set of files per key."""
DUPLICATES = "duplicates.parquet"
FITTED = "fitted"
"""Folder of fitted parameters (arrays + JSON, no pickle) for placing new tracks later."""
EXPORT = "export"
"""Default folder of ``soundclust export`` (under OUT unless --to is given)."""
RECOMPUTE = "recompute"
"""Where ``--recompute PRODUCT`` writes the product's new shards before they replace the old."""

TMP_PREFIX = ".tmp-"
"""Temporary files start with this; readers skip them, so a half write is never listed."""

SHARD_PREFIX = "part-"
CONFIG_HASH_KEY = b"soundclust.config_hash"

FOLDERS = (
    FEATURES,
    FEATURE_CHUNKS,
    EMBEDDINGS,
    OOF_DIR,
    ERRORS_DIR,
    CORPUS,
    LOGS,
    INDEX,
    FITTED,
    RECOMPUTE,
)
"""Entries of OUT that are folders."""

SUMMARY_OUTPUTS = (
    CLUSTERS,
    METRICS,
    REPORT,
    ERRORS,
    FEATURES,
    EMBEDDINGS,
    OOF,
    OOF_DIR,
    ID_TO_INDEX,
    RUN,
)
"""What a run's summary lists (when present), in this order."""


def feature_product(family: str) -> str:
    """The product (shard folder under OUT) of a signal feature family."""
    return f"{FEATURES}/{family}"


def staging_product(product: str) -> str:
    """Where ``--recompute`` writes ``product``'s new shards until they replace the old ones."""
    return f"{RECOMPUTE}/{product}"


def embeddings_product(backend: str) -> str:
    """The product (shard folder under OUT) of an embedding backend."""
    return f"{EMBEDDINGS}/{backend}"


def oof_field_table(field: str) -> str:
    """OUT-relative name of MSD's per-field out-of-fold table."""
    return f"{OOF_DIR}/{field}.parquet"


def index_file(key: str, suffix: str) -> str:
    """OUT-relative name of one file of the index built under ``key`` (``.faiss``, ``.json``…)."""
    return f"{INDEX}/{key}{suffix}"


def fitted_file(name: str) -> str:
    """OUT-relative name of a fitted-parameter file (``scaler.npz``, ``placement.json``…)."""
    return f"{FITTED}/{name}"


def is_temporary(base_name: str) -> bool:
    """True for files a writer has not committed yet."""
    return base_name.startswith(TMP_PREFIX)


def resolve(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for a local path or an s3/gs/file URI."""
    if "://" in uri_or_path:
        return pafs.FileSystem.from_uri(uri_or_path)
    return pafs.LocalFileSystem(), os.path.abspath(uri_or_path)


def join(base: str, *parts: str) -> str:
    """Join path parts with '/', which every pyarrow filesystem accepts."""
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def path(out: str, name: str) -> str:
    """Filesystem path of ``name`` under OUT (for messages and pyarrow calls)."""
    return join(resolve(out)[1], name)


def exists(out: str, name: str) -> bool:
    """True when ``OUT/name`` is a committed file, or a folder holding one at any depth.

    Asked of OUT's own filesystem, so the answer is the same on a local disk and on an object
    store, where a folder is only a key prefix: an empty folder (or an object store's folder
    marker) and a folder holding nothing but a writer's temporaries are not outputs yet.
    """
    fs, base = resolve(out)
    target = join(base, name)
    info = fs.get_file_info(target)
    if info.type == pafs.FileType.File:
        return not is_temporary(info.base_name)
    return info.type == pafs.FileType.Directory and _holds_committed_file(fs, target)


def _holds_committed_file(fs: pafs.FileSystem, folder: str) -> bool:
    """True when ``folder`` or a folder below it holds a committed file (listed level by level,
    so a folder with files directly in it answers after one listing)."""
    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=False))
    if any(i.type == pafs.FileType.File and not is_temporary(i.base_name) for i in infos):
        return True
    folders = [i.path for i in infos if i.type == pafs.FileType.Directory]
    return any(_holds_committed_file(fs, f) for f in folders)


def _temporary_beside(target: str) -> str:
    parent, _, name = target.rpartition("/")
    suffix = ".parquet" if name.endswith(".parquet") else ""
    return f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}{suffix}"


def write_bytes_atomic(fs: pafs.FileSystem, target: str, data: bytes) -> None:
    """Write ``data`` to ``target`` under a temporary name, then move it into place."""
    fs.create_dir(target.rpartition("/")[0], recursive=True)
    tmp = _temporary_beside(target)
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, target)


def write_table_atomic(
    fs: pafs.FileSystem, target: str, table: pa.Table, config_hash: str | None = None
) -> None:
    """Write a Parquet file under a temporary name, then move it into place."""
    if config_hash is not None:
        meta = dict(table.schema.metadata or {})
        meta[CONFIG_HASH_KEY] = config_hash.encode()
        table = table.replace_schema_metadata(meta)
    fs.create_dir(target.rpartition("/")[0], recursive=True)
    tmp = _temporary_beside(target)
    pq.write_table(table, tmp, filesystem=fs, compression="zstd")
    fs.move(tmp, target)


def stream_table_atomic(
    fs: pafs.FileSystem, target: str, schema: pa.Schema, tables: Iterable[pa.Table]
) -> int:
    """Write ``tables`` as row groups of one Parquet file, then move it into place.

    Streams (one table in memory at a time). Returns the rows written; with none, nothing is
    moved into place and the temporary file is removed.
    """
    fs.create_dir(target.rpartition("/")[0], recursive=True)
    tmp = _temporary_beside(target)
    n = 0
    try:
        with pq.ParquetWriter(tmp, schema, filesystem=fs, compression="zstd") as writer:
            for table in tables:
                writer.write_table(table)
                n += table.num_rows
    except BaseException:
        fs.delete_file(tmp)
        raise
    if n == 0:
        fs.delete_file(tmp)
    else:
        fs.move(tmp, target)
    return n


def write_bytes(out: str, name: str, data: bytes) -> str:
    """Atomically write ``OUT/name``; returns its path."""
    fs, base = resolve(out)
    target = join(base, name)
    write_bytes_atomic(fs, target, data)
    return target


def write_stream(out: str, name: str, fill) -> str:
    """Atomically write ``OUT/name`` by calling ``fill(stream)`` on a temporary file (large
    outputs such as a FAISS index are streamed instead of held twice as bytes); returns its path."""
    fs, base = resolve(out)
    target = join(base, name)
    fs.create_dir(target.rpartition("/")[0], recursive=True)
    tmp = _temporary_beside(target)
    with fs.open_output_stream(tmp) as f:
        fill(f)
    fs.move(tmp, target)
    return target


def read_stream(out: str, name: str, consume):
    """``consume(stream)`` on ``OUT/name`` and its result, or None when it is not a file."""
    fs, base = resolve(out)
    target = join(base, name)
    if fs.get_file_info(target).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(target) as f:
        return consume(f)


def write_json(out: str, name: str, obj: object) -> str:
    """Atomically write ``OUT/name`` as indented, key-sorted JSON."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    return write_bytes(out, name, data)


def write_table(out: str, name: str, table: pa.Table, config_hash: str | None = None) -> str:
    """Atomically write ``OUT/name`` as a Parquet file."""
    fs, base = resolve(out)
    target = join(base, name)
    write_table_atomic(fs, target, table, config_hash)
    return target


def read_bytes(out: str, name: str) -> bytes | None:
    """Content of ``OUT/name``, or None when it is not a file."""
    fs, base = resolve(out)
    target = join(base, name)
    if fs.get_file_info(target).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(target) as f:
        return f.read()


def list_files(out: str, folder: str) -> list[str]:
    """Base names of the committed files directly in ``OUT/folder`` (temporaries skipped)."""
    fs, base = resolve(out)
    target = join(base, folder)
    if fs.get_file_info(target).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(target, recursive=False))
    return sorted(
        i.base_name for i in infos if i.type == pafs.FileType.File and not is_temporary(i.base_name)
    )


def remove_file(out: str, name: str) -> None:
    """Delete ``OUT/name`` (callers pass only names soundclust wrote); absent is fine."""
    fs, base = resolve(out)
    target = join(base, name)
    if fs.get_file_info(target).type == pafs.FileType.File:
        fs.delete_file(target)


def read_json(out: str, name: str) -> dict:
    """``OUT/name`` as a dict; {} when absent or not valid JSON (a reader never crashes on it)."""
    data = read_bytes(out, name)
    if data is None:
        return {}
    try:
        value = json.loads(data.decode())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def read_table(out: str, name: str, columns: list[str] | None = None) -> pa.Table | None:
    """``OUT/name`` as an Arrow table, or None when it is not there."""
    fs, base = resolve(out)
    target = join(base, name)
    if fs.get_file_info(target).type != pafs.FileType.File:
        return None
    return pq.read_table(target, columns=columns, filesystem=fs)
