"""Turn an input (folder, CSV/Parquet/JSONL manifest) into the manifest table every run starts from.

A manifest has one row per track: ``track_id`` (stable string), ``path`` (absolute, or a URI) and any
metadata columns, carried untouched to the outputs. Folder scans use the path relative to the
root as ``track_id`` (file names repeat across folders); manifest rows without a ``track_id`` get
the path as written in the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from soundclust_ray.config import AUDIO_EXTENSIONS

MANIFEST_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                     ".ndjson": "jsonl", ".json": "jsonl"}


class ManifestError(ValueError):
    """A user-caused problem with the input: reported as one clear line, exit code 2."""


def scan_folder(root: str | os.PathLike, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> pd.DataFrame:
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


def read_manifest_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV/Parquet/JSONL manifest as strings-preserving pandas (metadata types kept)."""
    p = Path(path)
    kind = MANIFEST_SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise ManifestError(
            f"{path}: not a manifest (expected one of {', '.join(sorted(MANIFEST_SUFFIXES))}) "
            "and not a folder"
        )
    try:
        if kind == "csv":
            df = pd.read_csv(p, dtype={"track_id": str, "path": str}, keep_default_na=False,
                             na_values=[""])
        elif kind == "parquet":
            df = pd.read_parquet(p)
        else:
            df = pd.read_json(p, lines=True, dtype={"track_id": str, "path": str})
    except Exception as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc.__class__.__name__}: {exc})") from exc
    return df


def resolve_manifest(df: pd.DataFrame, base_dir: Path, allow_outside_root: bool = False) -> pd.DataFrame:
    """Validate a manifest table and resolve its paths against ``base_dir``.

    Rows whose path escapes ``base_dir`` (``../``, absolute elsewhere) keep their path but get an
    ``invalid_reason`` so the pipeline reports them as error rows instead of reading them.
    """
    if "path" not in df.columns:
        raise ManifestError(f"manifest has no 'path' column (columns: {', '.join(map(str, df.columns))})")
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
    base = base_dir.resolve()
    resolved, reasons = [], []
    for value in raw:
        if "://" in value:
            resolved.append(value)
            reasons.append("")
            continue
        full = Path(os.path.normpath(base / value)) if not os.path.isabs(value) else Path(value)
        resolved.append(str(full))
        inside = full == base or base in full.parents
        reasons.append("" if inside or allow_outside_root else
                       f"path escapes the manifest's folder {base} (use --allow-outside-root)")
    df["path"] = resolved
    df["invalid_reason"] = reasons
    duplicated = df["track_id"].duplicated(keep="first")
    df.loc[duplicated, "invalid_reason"] = "duplicate track_id in manifest (first row kept)"
    columns = ["track_id", "path"] + [c for c in df.columns if c not in ("track_id", "path")]
    return df[columns].reset_index(drop=True)


def build_manifest(input_path: str, allow_outside_root: bool = False, limit: int | None = None) -> pd.DataFrame:
    """The manifest of a folder or a manifest file; raises ManifestError for user errors.

    Columns: track_id, path, invalid_reason (empty when the row is usable), metadata...
    Duplicate track_ids keep their first row; later ones are flagged in ``invalid_reason``
    under a suffixed id so that every input row is accounted for in the outputs.
    """
    p = Path(input_path)
    if not p.exists():
        raise ManifestError(f"input not found: {input_path}")
    if p.is_dir():
        df = scan_folder(p)
        if df.empty:
            raise ManifestError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {input_path}")
        df["invalid_reason"] = ""
    else:
        df = resolve_manifest(read_manifest_file(p), p.parent, allow_outside_root)
        dup = df["invalid_reason"].str.startswith("duplicate track_id")
        if dup.any():
            counts = df.loc[dup].groupby("track_id").cumcount() + 1
            df.loc[dup, "track_id"] = df.loc[dup, "track_id"] + "#dup" + counts.astype(str)
    if limit is not None:
        df = df.iloc[:limit].reset_index(drop=True)
    return df
