"""The pure-numpy TF tensor-bundle reader, on bundles written here in the real on-disk format.

``write_bundle`` is a minimal writer of TensorFlow's format: a LevelDB-format table (prefix-
compressed blocks with restart arrays, an index block of block handles, a metaindex block and
the 48-byte footer with the table magic) whose values are ``BundleEntryProto`` messages, plus
``.data-NNNNN-of-NNNNN`` shards of raw little-endian bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from soundclust_ray.embed.convert_musicnn import convert_tensors, tensor_map, to_torch_layout
from soundclust_ray.embed.musicnn import MusicnnModel, load_model
from soundclust_ray.embed.tf_checkpoint import (
    TABLE_MAGIC,
    CheckpointFormatError,
    load_checkpoint,
    read_index,
    read_tensors,
)

TF_DTYPE = {
    np.dtype("float32"): 1,
    np.dtype("float64"): 2,
    np.dtype("int32"): 3,
    np.dtype("int64"): 9,
    np.dtype("bool"): 10,
    np.dtype("float16"): 19,
}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def entry_proto(dtype: int, shape: tuple[int, ...], shard: int, offset: int, size: int) -> bytes:
    dims = b"".join(field_bytes(2, field_varint(1, d)) for d in shape)
    msg = field_varint(1, dtype) + field_bytes(2, dims)
    if shard:
        msg += field_varint(3, shard)
    if offset:
        msg += field_varint(4, offset)
    msg += field_varint(5, size)
    return msg + varint(6 << 3 | 5) + struct.pack("<I", 0xDEADBEEF)  # crc32c: fixed32, unchecked


def block(entries: list[tuple[bytes, bytes]], restart_interval: int = 2) -> bytes:
    """A LevelDB block: keys share prefixes with the previous key except at restart points."""
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval:
            while shared < min(len(key), len(prev)) and key[shared] == prev[shared]:
                shared += 1
        else:
            restarts.append(len(out))
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        prev = key
    restarts = restarts or [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def table(entries: list[tuple[bytes, bytes]], per_block: int = 3, compression: int = 0) -> bytes:
    """A complete table file: data blocks of ``per_block`` entries, metaindex, index, footer."""
    out = bytearray()

    def put(blk: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(blk))
        out.extend(blk + bytes([compression]) + b"\0\0\0\0")
        return handle

    index = []
    for start in range(0, len(entries), per_block):
        chunk = entries[start : start + per_block]
        index.append((chunk[-1][0], put(block(chunk))))
    meta_handle = put(block([]))
    index_handle = put(block(index, restart_interval=1))
    footer = (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    return bytes(out + footer)


def write_bundle(
    tensors: dict[str, np.ndarray], num_shards: int = 1, per_block: int = 3
) -> tuple[bytes, list[bytes]]:
    """(index bytes, data shard bytes) of a tensor bundle holding ``tensors``."""
    shards = [bytearray() for _ in range(num_shards)]
    header = field_varint(1, num_shards) + field_bytes(3, field_varint(1, 1))
    entries = [(b"", header)]
    for i, name in enumerate(sorted(tensors)):
        value = np.asarray(tensors[name])
        raw = value.astype(value.dtype.newbyteorder("<")).tobytes()
        shard = i % num_shards
        proto = entry_proto(TF_DTYPE[value.dtype], value.shape, shard, len(shards[shard]), len(raw))
        entries.append((name.encode(), proto))
        shards[shard] += raw
    return table(entries, per_block), [bytes(s) for s in shards]


def sample_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv2d/kernel": rng.standard_normal((7, 5, 1, 3)).astype(np.float32),
        "conv2d/bias": rng.standard_normal(3).astype(np.float32),
        "conv2d_1/kernel": rng.standard_normal((2, 2)).astype(np.float16),
        "conv2d_1/kernel/Adam": np.zeros((2, 2), np.float32),
        "beta1_power": np.array(0.9, dtype=np.float32),
        "global_step": np.array(123456789012, dtype=np.int64),
        "counts": np.arange(6, dtype=np.int32).reshape(2, 3),
        "flags": np.array([True, False, True]),
        "scale": np.array([1.5, -2.25]),
        "empty": np.zeros((0, 4), np.float32),
    }


@pytest.mark.parametrize("num_shards", [1, 2])
@pytest.mark.parametrize("per_block", [1, 3, 100])
def test_round_trip_all_tensors(num_shards: int, per_block: int) -> None:
    tensors = sample_tensors()
    index, shards = write_bundle(tensors, num_shards, per_block)
    got = read_tensors(index, shards)
    assert set(got) == set(tensors)
    for name, value in tensors.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_index_keeps_entries_and_shard_count() -> None:
    tensors = sample_tensors()
    index, _ = write_bundle(tensors, num_shards=2)
    num_shards, entries = read_index(index)
    assert num_shards == 2
    assert list(entries) == sorted(tensors)
    assert entries["conv2d/kernel"].shape == (7, 5, 1, 3)
    assert entries["conv2d/kernel"].size == 7 * 5 * 3 * 4


def test_load_checkpoint_from_files_and_subset(tmp_path: Path) -> None:
    tensors = sample_tensors()
    index, shards = write_bundle(tensors, num_shards=2)
    prefix = tmp_path / "model.ckpt"
    Path(f"{prefix}.index").write_bytes(index)
    for i, data in enumerate(shards):
        Path(f"{prefix}.data-{i:05d}-of-00002").write_bytes(data)
    got = load_checkpoint(prefix, names=["counts", "scale"])
    assert set(got) == {"counts", "scale"}
    np.testing.assert_array_equal(got["counts"], tensors["counts"])
    # The musicnn wheel's layout: files named ".index" inside a folder, prefix "<dir>/".
    folder = tmp_path / "MSD_musicnn"
    folder.mkdir()
    index, shards = write_bundle(tensors)
    (folder / ".index").write_bytes(index)
    (folder / ".data-00000-of-00001").write_bytes(shards[0])
    assert set(load_checkpoint(f"{folder}/")) == set(tensors)


def test_missing_tensor_is_a_key_error() -> None:
    index, shards = write_bundle(sample_tensors())
    with pytest.raises(KeyError, match="nope"):
        read_tensors(index, shards, ["nope"])


def test_rejects_bad_files() -> None:
    index, shards = write_bundle(sample_tensors())
    with pytest.raises(CheckpointFormatError, match="magic"):
        read_tensors(index[:-1] + b"\0", shards)
    with pytest.raises(CheckpointFormatError, match="too small"):
        read_tensors(b"short", shards)
    with pytest.raises(CheckpointFormatError, match="data shards"):
        read_tensors(index, shards + shards)
    with pytest.raises(CheckpointFormatError, match="past the end"):
        read_tensors(index, [shards[0][:10]])
    compressed = table([(b"", b""), (b"a", b"")], compression=1)
    with pytest.raises(CheckpointFormatError, match="compressed"):
        read_index(compressed)
    wrong_size = entry_proto(1, (2, 2), 0, 0, 12)
    with pytest.raises(CheckpointFormatError, match="does not match"):
        read_tensors(table([(b"", b""), (b"t", wrong_size)]), [bytes(16)])


def tf_layout(value: np.ndarray, kind: str) -> np.ndarray:
    """Inverse of ``to_torch_layout``: torch weights back to the TF checkpoint's layout."""
    if kind == "conv2d":
        return value.transpose(2, 3, 1, 0)
    if kind == "conv1d":
        return value.transpose(2, 1, 0)[:, :, None, :]
    if kind == "dense":
        return value.T
    return value


def test_musicnn_checkpoint_converts_to_the_shipped_model() -> None:
    """A bundle laid out like the wheel's (TF names, HWIO kernels, Adam slots) → same model."""
    shipped = {k: v.numpy() for k, v in load_model("MSD_musicnn")[0].state_dict().items()}
    tf_tensors = {}
    for key, (tf_name, kind) in tensor_map().items():
        tf_tensors[tf_name] = tf_layout(shipped[key], kind)
        tf_tensors[f"{tf_name}/Adam"] = np.zeros_like(tf_tensors[tf_name])
    tf_tensors["beta1_power"] = np.array(0.9, np.float32)
    assert tf_tensors["conv2d_5/kernel"].shape == (7, 561, 1, 64)
    assert tf_tensors["conv2d/kernel"].shape == (7, 38, 1, 204)
    index, shards = write_bundle(tf_tensors, per_block=16)
    state = convert_tensors(read_tensors(index, shards))
    assert len(state) == 64
    assert sum(v.size for v in state.values()) == 792_079
    net = MusicnnModel()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), shipped[key], err_msg=key)


def test_to_torch_layout_shapes() -> None:
    assert to_torch_layout(np.zeros((7, 38, 1, 204)), "conv2d").shape == (204, 1, 7, 38)
    assert to_torch_layout(np.zeros((7, 561, 1, 64)), "conv1d").shape == (64, 561, 7)
    assert to_torch_layout(np.zeros((1506, 200)), "dense").shape == (200, 1506)
    assert to_torch_layout(np.zeros(5, np.float64), "bn").dtype == np.float32
