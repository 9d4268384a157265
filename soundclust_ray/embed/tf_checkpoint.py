"""Read TensorFlow checkpoints (tensor bundles) with numpy only.

A bundle is ``<prefix>.index``, an uncompressed LevelDB-format table mapping tensor names to
``BundleEntryProto`` records (dtype, shape, shard, offset, size), plus ``<prefix>.data-*``
shards of raw little-endian tensor bytes. Parsing both directly lets us convert the musicnn
weights without TensorFlow, which would be a 1.6 GB dependency for a one-off read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
"""LevelDB table magic number, the last 8 bytes of every table file."""
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
"""One compression-type byte plus a masked CRC32C after every block."""

DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
"""TensorFlow ``DataType`` enum values with a fixed-width numpy equivalent."""


class CheckpointFormatError(ValueError):
    """The bytes are not a tensor bundle this reader understands."""


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives in the data shards (a decoded ``BundleEntryProto``)."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointFormatError("varint longer than 64 bits")


def iter_proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def parse_shape(buf: bytes) -> tuple[int, ...]:
    """Dimensions of a ``TensorShapeProto`` (field 2 = dim, whose field 1 = size)."""
    dims: list[int] = []
    for number, _, value in iter_proto_fields(buf):
        if number == 2:
            size = 0
            for sub_number, _, sub_value in iter_proto_fields(value):
                if sub_number == 1:
                    size = int(sub_value)
            dims.append(size)
        elif number == 3 and value:
            raise CheckpointFormatError("tensor of unknown rank")
    return tuple(dims)


def parse_entry(buf: bytes) -> BundleEntry:
    """Decode a ``BundleEntryProto``; sliced (partitioned) variables are refused."""
    values: dict[str, object] = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0}
    for number, _, value in iter_proto_fields(buf):
        if number == 1:
            values["dtype"] = value
        elif number == 2:
            values["shape"] = parse_shape(value)
        elif number in (3, 4, 5):
            values[("shard_id", "offset", "size")[number - 3]] = value
        elif number == 7:
            raise CheckpointFormatError("partitioned (sliced) variables are not supported")
    return BundleEntry(**values)  # type: ignore[arg-type]


def read_block(table: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of one table block, undoing LevelDB's key prefix sharing."""
    if offset + size + BLOCK_TRAILER_SIZE > len(table):
        raise CheckpointFormatError("block handle points past the end of the index file")
    if table[offset + size] != 0:
        raise CheckpointFormatError("compressed index blocks are not supported")
    block = table[offset : offset + size]
    if size < 4:
        raise CheckpointFormatError("block too small")
    (num_restarts,) = struct.unpack_from("<I", block, size - 4)
    end = size - 4 - 4 * num_restarts
    if end < 0:
        raise CheckpointFormatError("corrupt block restart array")
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < end:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        if shared > len(key):
            raise CheckpointFormatError("corrupt key prefix in block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def read_table(table: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-format table file, in key order."""
    if len(table) < FOOTER_SIZE:
        raise CheckpointFormatError("file too small to be a checkpoint index")
    footer = table[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != TABLE_MAGIC:
        raise CheckpointFormatError("bad table magic: not a TensorFlow checkpoint index")
    _, pos = read_varint(footer, 0)
    _, pos = read_varint(footer, pos)
    index_offset, pos = read_varint(footer, pos)
    index_size, _ = read_varint(footer, pos)
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in read_block(table, index_offset, index_size):
        offset, pos = read_varint(handle, 0)
        size, _ = read_varint(handle, pos)
        entries.extend(read_block(table, offset, size))
    return entries


def read_index(index: bytes) -> tuple[int, dict[str, BundleEntry]]:
    """Number of data shards and the entry of every tensor in a bundle's ``.index`` bytes."""
    num_shards = 1
    entries: dict[str, BundleEntry] = {}
    for key, value in read_table(index):
        if key == b"":
            for number, _, field_value in iter_proto_fields(value):
                if number == 1:
                    num_shards = int(field_value)
                elif number == 2 and field_value != 0:
                    raise CheckpointFormatError("big-endian checkpoints are not supported")
        else:
            entries[key.decode()] = parse_entry(value)
    return num_shards, entries


def read_tensors(
    index: bytes, shards: Sequence[bytes], names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Decode tensors (all, or only ``names``) from a bundle's index and data-shard bytes."""
    num_shards, entries = read_index(index)
    if len(shards) != num_shards:
        raise CheckpointFormatError(f"index names {num_shards} data shards, got {len(shards)}")
    wanted = entries.keys() if names is None else names
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        if name not in entries:
            raise KeyError(f"tensor not in checkpoint: {name}")
        entry = entries[name]
        if entry.dtype not in DTYPES:
            raise CheckpointFormatError(f"{name}: unsupported dtype enum {entry.dtype}")
        dtype = DTYPES[entry.dtype]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise CheckpointFormatError(f"{name}: size {entry.size} does not match its shape")
        data = shards[entry.shard_id]
        if entry.offset + entry.size > len(data):
            raise CheckpointFormatError(f"{name}: data past the end of shard {entry.shard_id}")
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=entry.offset)
        out[name] = flat.reshape(entry.shape).astype(dtype.newbyteorder("="), copy=True)
    return out


def load_checkpoint(
    prefix: str | Path, names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Tensors of the bundle at ``prefix`` (``prefix.index`` and ``prefix.data-*-of-*``).

    A prefix that is a folder ending in ``/`` means files named ``.index`` inside it, as in the
    musicnn wheel.
    """
    prefix = str(prefix)
    index = Path(prefix + ".index").read_bytes()
    num_shards, _ = read_index(index)
    shards = [
        Path(f"{prefix}.data-{i:05d}-of-{num_shards:05d}").read_bytes() for i in range(num_shards)
    ]
    return read_tensors(index, shards, names)
