"""Million Song Dataset per-track HDF5 files: analysis arrays → seed 004's 30 statistics per field.

The MSD source's pure readers, below the Ray stage that calls them (``stages/msd.py``) and the
source plug-in that wires them (``sources/msd.py``).

Pure functions (no Ray): :func:`read_msd_track` opens one file, :func:`msd_field_stats` turns one
analysis array into the seed's ``cal_stat_matrix`` row. Listing is a generator
(:func:`iter_msd_paths`) and the manifest is written in Parquet row groups
(:func:`write_msd_manifest`), so millions of files never sit in driver memory as one list.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from soundclust_ray import outdir
from soundclust_ray.audio.errors import TrackError
from soundclust_ray.config import MsdConfig

SEQ_STATS = ("mean", "std", "iqr", "cv", "skew", "kurtosis", "q10", "q50", "q90", "length")
"""Seed 004's ``seq_stats`` in its order; a density histogram follows them."""
META_COLUMNS = ("artist", "title", "year")
"""Metadata the MSD stage carries beside the statistics, as text (year "" when unknown)."""
MSD_EXTENSIONS = (".h5",)
MANIFEST_CHUNK_ROWS = 100_000
"""Rows per manifest row group while listing: bounds driver memory, not a tuning knob."""

_MSD = MsdConfig()


class MsdTrackError(TrackError):
    """The file is not a per-track MSD HDF5 file or lacks a requested analysis field."""


def stat_names(bins: int = _MSD.hist_bins) -> list[str]:
    """Names of the statistics of one field: seq_stats then ``hist_00``…"""
    return [*SEQ_STATS, *(f"hist_{i:02d}" for i in range(bins))]


def msd_columns(cfg: MsdConfig = _MSD) -> list[str]:
    """Every statistic column of a run, ``msd_<field>__<stat>``, in field order."""
    names = stat_names(cfg.hist_bins)
    return [f"msd_{f}__{s}" for f in cfg.fields for s in names]


def field_columns(field: str, bins: int = _MSD.hist_bins) -> list[str]:
    """The statistic columns of one field."""
    return [f"msd_{field}__{s}" for s in stat_names(bins)]


def _skew_kurtosis(x: np.ndarray) -> tuple[float, float]:
    """scipy.stats ``skew(x)`` and ``kurtosis(x)`` (biased, Fisher) with the same arithmetic.

    scipy's wrappers cost ~0.2 ms per call, more than the rest of a file's statistics; this
    repeats its operations in its order (tests compare bit for bit), NaN for constant data.
    """
    mean = np.mean(x)
    a0 = x - mean
    m2 = np.mean(a0**2)
    m3 = np.mean(a0**2 * a0)
    m4 = np.mean((a0**2) ** 2)
    if m2 <= (np.finfo(np.float64).eps * mean) ** 2:
        return float("nan"), float("nan")
    return m3 / m2**1.5, m4 / m2**2.0 - 3


def msd_field_stats(arr: np.ndarray, bins: int = _MSD.hist_bins) -> np.ndarray:
    """Seed 004's ``cal_stat_matrix`` row for one analysis array: (10 + bins,) float64.

    Positive successive differences, divided by their median (+1e-8), summarised by mean, std,
    IQR, CV, skewness, kurtosis, q10/q50/q90, count and a ``bins``-bin density histogram; NaN and
    infinities become 0, and fewer than 2 values or no positive difference give zeros. One
    deliberate difference: infinite differences are dropped first, where the seed's histogram
    would raise on them.
    """
    zeros = np.zeros(len(SEQ_STATS) + bins)
    b = np.asarray(arr, dtype=np.float64).ravel()
    if b.size < 2:
        return zeros
    d = np.diff(b)
    d = d[(d > 0) & np.isfinite(d)]
    if d.size == 0:
        return zeros
    d = d / (np.median(d) + 1e-8)
    with np.errstate(all="ignore"):
        q10, q25, q50, q75, q90 = np.percentile(d, [10, 25, 50, 75, 90])
        mean, std = np.mean(d), np.std(d)
        skew, kurt = _skew_kurtosis(d)
        seq = [mean, std, q75 - q25, std / (mean + 1e-8), skew, kurt, q10, q50, q90]
        hist, _ = np.histogram(d, bins=bins, density=True)
    row = np.concatenate([np.asarray([*seq, d.size], dtype=np.float64), hist])
    return np.nan_to_num(row, nan=0.0, posinf=0.0, neginf=0.0)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def read_msd_track(path: str, fields: tuple[str, ...] = _MSD.fields) -> dict:
    """One MSD track: ``track_id``, ``artist``, ``title``, ``year`` and ``analysis`` {field: array}.

    ``track_id`` comes from ``analysis/songs`` (the file name when absent); ``year`` is NaN when
    ``musicbrainz/songs`` has none or 0 (MSD's "unknown"). Raises :class:`MsdTrackError` for a
    file that is not HDF5, has no ``analysis`` group, holds several songs, or lacks a field.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise MsdTrackError(f"not an HDF5 file: {path}") from exc
    with f:
        if "analysis" not in f or not isinstance(f["analysis"], h5py.Group):
            raise MsdTrackError("not an MSD track file: no 'analysis' group")
        analysis = f["analysis"]
        songs = analysis.get("songs")
        if songs is not None and songs.shape[0] > 1:
            raise MsdTrackError(f"aggregate MSD file with {songs.shape[0]} songs, expected one")
        missing = [name for name in fields if name not in analysis]
        if missing:
            raise MsdTrackError(f"MSD file lacks analysis/{', analysis/'.join(missing)}")
        arrays = {name: np.asarray(analysis[name][()], dtype=np.float64) for name in fields}
        track_id = os.path.splitext(os.path.basename(path))[0]
        if songs is not None and "track_id" in (songs.dtype.names or ()):
            track_id = _text(songs[0]["track_id"]) or track_id
        artist = title = ""
        if "metadata/songs" in f:
            meta = f["metadata/songs"]
            names = meta.dtype.names or ()
            if meta.shape[0] and "artist_name" in names:
                artist = _text(meta[0]["artist_name"])
            if meta.shape[0] and "title" in names:
                title = _text(meta[0]["title"])
        year = float("nan")
        if "musicbrainz/songs" in f:
            mb = f["musicbrainz/songs"]
            if mb.shape[0] and "year" in (mb.dtype.names or ()) and int(mb[0]["year"]) > 0:
                year = float(mb[0]["year"])
    return {
        "track_id": track_id,
        "artist": artist,
        "title": title,
        "year": year,
        "analysis": arrays,
    }


def msd_track_row(path: str, cfg: MsdConfig = _MSD) -> dict[str, object]:
    """All statistic columns (float32) plus artist/title/year (text) of one file: a stage row."""
    track = read_msd_track(path, cfg.fields)
    row: dict[str, object] = {}
    for name in cfg.fields:
        values = msd_field_stats(track["analysis"][name], cfg.hist_bins).astype(np.float32)
        row.update(zip(field_columns(name, cfg.hist_bins), values, strict=True))
    year = "" if np.isnan(track["year"]) else str(int(track["year"]))
    row.update(artist=track["artist"], title=track["title"], year=year)
    return row


def iter_msd_paths(root: str, extensions: tuple[str, ...] = MSD_EXTENSIONS) -> Iterator[str]:
    """Every MSD file under ``root`` (recursive ``os.scandir``), directory by directory, sorted.

    A generator: memory holds one directory's entries at a time, never the whole listing.
    Symlinked directories are not followed (no cycles); symlinked files are listed.
    """
    stack = [os.path.abspath(root)]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            elif entry.name.lower().endswith(extensions):
                yield entry.path
        stack.extend(reversed(subdirs))


def iter_msd_manifest_tables(
    root: str, chunk_rows: int = MANIFEST_CHUNK_ROWS
) -> Iterator[pa.Table]:
    """Manifest rows (``track_id``, ``path``) in tables of at most ``chunk_rows``.

    ``track_id`` is the file name without ``.h5``: MSD names files by their unique track id, which
    is also the id users search by. Usable as ``ray.data.from_arrow`` input chunk by chunk.
    """
    ids: list[str] = []
    paths: list[str] = []
    for path in iter_msd_paths(root):
        ids.append(os.path.splitext(os.path.basename(path))[0])
        paths.append(path)
        if len(ids) >= chunk_rows:
            yield pa.table({"track_id": ids, "path": paths})
            ids, paths = [], []
    if ids:
        yield pa.table({"track_id": ids, "path": paths})


def write_msd_manifest(root: str, out_path: str, chunk_rows: int = MANIFEST_CHUNK_ROWS) -> int:
    """Stream the listing of ``root`` into a Parquet manifest (one row group per chunk).

    Written atomically (``outdir.stream_table_atomic``); ``out_path`` may be a URI. Returns the
    number of rows. Raises ValueError when ``root`` holds no ``.h5`` file.
    """
    fs, target = outdir.resolve(out_path)
    schema = pa.schema([("track_id", pa.string()), ("path", pa.string())])
    n = outdir.stream_table_atomic(fs, target, schema, iter_msd_manifest_tables(root, chunk_rows))
    if n == 0:
        raise ValueError(f"no MSD .h5 files under {root}")
    return n
