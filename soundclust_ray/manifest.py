"""Turn an input (folder, CSV/Parquet/JSONL manifest) into the manifest table every run starts from.

A manifest has one row per track: ``track_id`` (stable string), ``path`` (absolute, or a URI)
and any metadata columns, carried untouched to the outputs. Folder scans use the path relative
to the root as ``track_id`` (file names repeat across folders); manifest rows without a
``track_id`` get the path as written in the manifest.

INPUT may also be an s3://, gs:// or file:// URI (see ``storage``): a URI prefix is scanned like
a folder, a manifest URI is read through the same filesystem, and its relative paths resolve
to URIs beside it, so every node of a cluster reads the same objects.
"""

from __future__ import annotations

import io
import os
import posixpath
from pathlib import Path

import pandas as pd

from soundclust_ray import storage
from soundclust_ray.config import AUDIO_EXTENSIONS

MANIFEST_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                     ".ndjson": "jsonl", ".json": "jsonl"}


class ManifestError(ValueError):
    """A user-caused problem with the input: reported as one clear line, exit code 2."""


def scan_folder(
    root: str | os.PathLike, extensions: tuple[str, ...] = AUDIO_EXTENSIONS
) -> pd.DataFrame:
    """All audio files below ``root`` (recursive, case-insensitive extensions), sorted by track_id.

    Directories named like audio files (``x.wav/``) are skipped by the scan; broken symlinks are
    kept so that they become error rows rather than silently vanishing.
    """
    root = Path(root).resolve()
    wanted = {e.lower() for e in extensions}
    rows = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            if Path(name).suffix.lower() in wanted:
                full = Path(dirpath) / name
                rows.append((full.relative_to(root).as_posix(), str(full)))
    rows.sort()
    return pd.DataFrame(rows, columns=["track_id", "path"])


def scan_uri(root: str, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> pd.DataFrame:
    """All audio objects below a URI prefix (recursive listing), ids relative to the prefix."""
    rows = storage.list_files(root, extensions)
    return pd.DataFrame(rows, columns=["track_id", "path"])


def read_manifest_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV/Parquet/JSONL manifest (local or URI) as pandas, metadata types kept."""
    remote = storage.is_remote(path)
    suffix = posixpath.splitext(str(path).split("?", 1)[0])[1] if remote else Path(path).suffix
    kind = MANIFEST_SUFFIXES.get(suffix.lower())
    if kind is None:
        raise ManifestError(
            f"{path}: not a manifest (expected one of {', '.join(sorted(MANIFEST_SUFFIXES))}) "
            "and not a folder"
        )
    try:
        p = io.BytesIO(storage.read_bytes(str(path))) if remote else Path(path)
        if kind == "csv":
            df = pd.read_csv(p, dtype={"track_id": str, "path": str}, keep_default_na=False,
                             na_values=[""])
        elif kind == "parquet":
            df = pd.read_parquet(p)
        else:
            df = pd.read_json(p, lines=True, dtype={"track_id": str, "path": str})
    except Exception as exc:
        detail = f"{exc.__class__.__name__}: {exc}"
        raise ManifestError(f"{path}: cannot read manifest ({detail})") from exc
    return df


def resolve_manifest(
    df: pd.DataFrame, base_dir: Path | str, allow_outside_root: bool = False
) -> pd.DataFrame:
    """Validate a manifest table and resolve its paths against ``base_dir`` (a folder or a URI).

    Rows whose path escapes ``base_dir`` (``../``, absolute elsewhere) keep their path but get an
    ``invalid_reason`` so the pipeline reports them as error rows instead of reading them.
    """
    if "path" not in df.columns:
        columns = ", ".join(map(str, df.columns))
        raise ManifestError(f"manifest has no 'path' column (columns: {columns})")
    df = df.copy()
    df = df[df["path"].notna() & (df["path"].astype(str).str.strip() != "")]
    if df.empty:
        raise ManifestError("manifest has no rows with a path")
    raw = df["path"].astype(str)
    if "track_id" not in df.columns:
        df["track_id"] = raw
    else:
        missing = df["track_id"].isna() | (df["track_id"].astype(str).str.strip() == "")
        df.loc[missing, "track_id"] = raw[missing]
    df["track_id"] = df["track_id"].astype(str)
    resolve_one = (_uri_resolver(str(base_dir)) if storage.is_remote(base_dir)
                   else _local_resolver(Path(base_dir)))
    resolved, reasons = [], []
    for value in raw:
        if "://" in value:
            resolved.append(value)
            reasons.append("")
            continue
        full, inside, base = resolve_one(value)
        resolved.append(full)
        reasons.append("" if inside or allow_outside_root else
                       f"path escapes the manifest's folder {base} (use --allow-outside-root)")
    df["path"] = resolved
    df["invalid_reason"] = reasons
    duplicated = df["track_id"].duplicated(keep="first")
    df.loc[duplicated, "invalid_reason"] = "duplicate track_id in manifest (first row kept)"
    columns = ["track_id", "path"] + [c for c in df.columns if c not in ("track_id", "path")]
    return df[columns].reset_index(drop=True)


def _local_resolver(base_dir: Path):
    """value → (absolute path, inside base_dir?, base) for manifests on a local disk."""
    base = base_dir.resolve()

    def resolve_one(value: str) -> tuple[str, bool, Path]:
        full = Path(os.path.normpath(base / value)) if not os.path.isabs(value) else Path(value)
        return str(full), full == base or base in full.parents, base

    return resolve_one


def _uri_resolver(base_uri: str):
    """value → (URI, inside base_uri?, base_uri): relative paths name objects beside it."""
    _, base = storage.resolve(base_uri)

    def resolve_one(value: str) -> tuple[str, bool, str]:
        if value.startswith("/"):
            return value, False, base_uri
        full = posixpath.normpath(posixpath.join(base, value))
        return storage.to_uri(base_uri, full), full.startswith(base + "/"), base_uri

    return resolve_one


def build_manifest(
    input_path: str, allow_outside_root: bool = False, limit: int | None = None
) -> pd.DataFrame:
    """The manifest of a folder or a manifest file; raises ManifestError for user errors.

    Columns: track_id, path, invalid_reason (empty when the row is usable), metadata...
    Duplicate track_ids keep their first row; later ones are flagged in ``invalid_reason``
    under a suffixed id so that every input row is accounted for in the outputs.
    """
    input_path = storage.local_path(input_path)
    remote = storage.is_remote(input_path)
    kind = _remote_kind(input_path) if remote else _local_kind(Path(input_path))
    if kind is None:
        raise ManifestError(f"input not found: {input_path}")
    if kind == "dir":
        df = scan_uri(input_path) if remote else scan_folder(input_path)
        if df.empty:
            extensions = ", ".join(AUDIO_EXTENSIONS)
            raise ManifestError(f"no audio files ({extensions}) found under {input_path}")
        df["invalid_reason"] = ""
    else:
        parent = _uri_parent(input_path) if remote else Path(input_path).parent
        df = resolve_manifest(read_manifest_file(input_path), parent, allow_outside_root)
        dup = df["invalid_reason"].str.startswith("duplicate track_id")
        if dup.any():
            counts = df.loc[dup].groupby("track_id").cumcount() + 1
            df.loc[dup, "track_id"] = df.loc[dup, "track_id"] + "#dup" + counts.astype(str)
    if limit is not None:
        df = df.iloc[:limit].reset_index(drop=True)
    return df


def _local_kind(p: Path) -> str | None:
    if not p.exists():
        return None
    return "dir" if p.is_dir() else "file"


def _remote_kind(uri: str) -> str | None:
    """'dir' for a prefix with objects below it, 'file' for an object, None when absent."""
    import pyarrow.fs as pafs

    try:
        info = storage.file_info(uri)
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, bad bucket: one clear line
        raise ManifestError(f"cannot read {uri} ({exc.__class__.__name__}: {exc})") from exc
    if info.type == pafs.FileType.NotFound:
        return None
    return "dir" if info.type == pafs.FileType.Directory else "file"


def _uri_parent(uri: str) -> str:
    _, path = storage.resolve(uri)
    return storage.to_uri(uri, posixpath.dirname(path))
