"""Inputs on object storage: s3://, gs:// and file:// URIs through pyarrow filesystems.

Every node of a cluster must read the same corpus, so INPUT, the paths inside a manifest and
OUT may be URIs. A ``file://`` URI is just a local path (a shared mount on a cluster); other
schemes go through ``pyarrow.fs``. Endpoints and credentials come from the environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``
for S3-compatible stores; ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS), or from URI query
parameters such as ``s3://bucket/key?endpoint_override=host:port&scheme=http``.

Audio is read through :class:`RangeReader`: ranged reads in large blocks, so a decoder that
stops after ``max_duration_s`` also stops fetching, and a long file never lands whole in memory.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from functools import lru_cache
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

from soundclust_ray.config import REMOTE_READ_BLOCK_BYTES, REMOTE_READ_CACHED_BLOCKS


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://…`` strings (Windows drive letters never contain '://')."""
    return "://" in str(path)


def local_path(path: str | os.PathLike) -> str:
    """A ``file://`` URI as a plain local path; anything else unchanged."""
    text = str(path)
    if text.startswith("file://"):
        return unquote(urlsplit(text, allow_fragments=False).path)
    return text


def is_remote(path: str | os.PathLike) -> bool:
    """A URI that must go through a pyarrow filesystem (not ``file://``)."""
    return is_uri(path) and not str(path).startswith("file://")


ENDPOINT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
"""Environment variables that redirect S3 to another endpoint (MinIO, Ceph, a test server)."""


@lru_cache(maxsize=32)
def _filesystem(scheme: str, netloc: str, query: str, endpoint: tuple) -> pafs.FileSystem:
    """One filesystem per store, options and endpoint, reused for every track a worker reads."""
    suffix = f"?{query}" if query else ""
    fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{netloc}/{suffix}")
    return fs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and in-filesystem path (``bucket/key`` for object stores) of a remote URI.

    Keys are taken verbatim (no percent-decoding, '#' is part of the key), so the URIs that
    ``to_uri`` builds from listed keys (``Symphony #5.flac``, ``a b.wav``) name those keys.
    """
    parts = urlsplit(uri, allow_fragments=False)
    path = parts.path.lstrip("/")
    endpoint = tuple(os.environ.get(name, "") for name in ENDPOINT_ENV)
    fs = _filesystem(parts.scheme, parts.netloc, parts.query, endpoint)
    return fs, f"{parts.netloc}/{path}".rstrip("/")


def to_uri(like: str, fs_path: str) -> str:
    """The URI of ``fs_path`` (``bucket/key``) on the same store and options as ``like``."""
    parts = urlsplit(like, allow_fragments=False)
    suffix = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{fs_path.lstrip('/')}{suffix}"


def file_info(uri: str) -> pafs.FileInfo:
    """What is at a remote URI (File, Directory or NotFound)."""
    fs, path = resolve(uri)
    return fs.get_file_info(path)


def list_files(uri: str, extensions: tuple[str, ...]) -> list[tuple[str, str, int, int]]:
    """(path relative to ``uri``, URI, size, mtime_ns) of every file below a prefix with one of
    ``extensions``: the size and time come with the listing and tell a rewritten object apart.

    Recursive; extensions compare case-insensitively; "directories" named like audio files
    (object-store prefixes such as ``x.wav/``) are skipped like in a local scan.
    """
    fs, root = resolve(uri)
    wanted = {e.lower() for e in extensions}
    found = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        extension = os.path.splitext(info.base_name)[1].lower()
        if info.type != pafs.FileType.File or extension not in wanted:
            continue
        relative = info.path[len(root):].lstrip("/")
        found.append((relative, to_uri(uri, info.path), info.size, info.mtime_ns or 0))
    return sorted(found)


def read_bytes(uri: str) -> bytes:
    """The whole object (manifests and other small files)."""
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


class RangeReader(io.RawIOBase):
    """A seekable, read-only file object over a remote file that fetches whole blocks on demand.

    Decoders (libsndfile, ffmpeg) issue many small reads and a few seeks back to the header;
    serving them from a small cache of large blocks turns that into a few ranged GETs, and
    only the blocks a decoder actually touches are ever fetched.
    """

    def __init__(self, uri: str, block_bytes: int = REMOTE_READ_BLOCK_BYTES,
                 cached_blocks: int = REMOTE_READ_CACHED_BLOCKS):
        fs, path = resolve(uri)
        self.name = uri
        self._file = fs.open_input_file(path)
        self._size = self._file.size()
        self._block = block_bytes
        self._cached_blocks = max(1, cached_blocks)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self.bytes_fetched = 0
        """Bytes requested from the store so far (what bounded reading is measured by)."""

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _block_at(self, index: int) -> bytes:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        start = index * self._block
        data = self._file.read_at(min(self._block, self._size - start), start)
        self.bytes_fetched += len(data)
        self._cache[index] = data
        if len(self._cache) > self._cached_blocks:
            self._cache.popitem(last=False)
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        written = 0
        while written < len(view) and self._pos < self._size:
            index, offset = divmod(self._pos, self._block)
            chunk = self._block_at(index)[offset : offset + len(view) - written]
            view[written : written + len(chunk)] = chunk
            written += len(chunk)
            self._pos += len(chunk)
        return written

    def close(self) -> None:
        if not self.closed:
            self._file.close()
            self._cache.clear()
        super().close()
