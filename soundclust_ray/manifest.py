"""Turn an input (folder, CSV/Parquet/JSONL manifest) into the manifest table every run starts from.

A manifest has one row per input row: ``track_id`` (stable string), ``path`` (absolute, or a
URI), ``source_id`` (the file's identity: size and modification time, so a resumed run can tell
a changed file from the one it already processed), ``invalid_reason`` (empty when the row can be
processed) and any metadata columns, carried untouched to the outputs. Folder scans use the path
relative to the root as ``track_id`` (file names repeat across folders); manifest rows without a
``track_id`` get the path as written in the manifest.

No input row is dropped: an empty path, a link or ``../`` that leaves the root, a FIFO or device,
a file name that is not UTF-8, a repeated id or an unparsable JSON line each become a row with an
``invalid_reason``, which the run reports as one row of OUT/errors.parquet. Every path is resolved
(symlinks included) before it is compared with the root, and the resolved path is what is read.

INPUT may also be an s3://, gs:// or file:// URI (see ``storage``): a URI prefix is scanned like
a folder, a manifest URI is read through the same filesystem, and its relative paths resolve
to URIs beside it, so every node of a cluster reads the same objects. Object stores have no
links; their identity is the listed size and last-modified time (S3 sets it on every PUT).
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import stat
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from soundclust_ray import storage
from soundclust_ray.config import AUDIO_EXTENSIONS
from soundclust_ray.errors import UserError

MANIFEST_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
IDENTITY_COLUMNS = ("track_id", "path", "source_id", "invalid_reason")
# Byte-order marks first (a UTF-16 export from a spreadsheet), then the encodings manifests are
# written in: UTF-8, Windows' cp1252, and latin-1, which decodes any byte sequence.
BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
TEXT_ENCODINGS = ("utf-8", "cp1252", "latin-1")
SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
NOT_UTF8 = "file name is not valid UTF-8 (shown with \\x escapes): rename the file"


class ManifestError(UserError, ValueError):
    """A user-caused problem with the input: reported as one clear line, exit code 2."""


def source_id(st: os.stat_result) -> str:
    """A file's identity for resume: size and modification time in nanoseconds."""
    return f"{st.st_size}:{st.st_mtime_ns}"


def special_file_kind(mode: int) -> str | None:
    """'a FIFO', 'a socket', ... for files that must never be opened (a FIFO blocks), else None."""
    return next((kind for test, kind in SPECIAL_FILES if test(mode)), None)


def inspect_local(path: str, root: Path | None, allow_outside_root: bool) -> tuple[str, str, str]:
    """(resolved path, source_id, invalid_reason) of one local file.

    A missing or unreadable file stays valid with an empty source_id: the decode stage reports
    it with its own message (file not found, permission denied, is a directory).
    """
    resolved = os.path.realpath(path)
    if root is not None and not allow_outside_root and not _inside(Path(resolved), root):
        return resolved, "", f"path escapes the manifest's folder {root} (use --allow-outside-root)"
    try:
        st = os.stat(resolved)
    except OSError:
        return resolved, "", ""
    special = special_file_kind(st.st_mode)
    if special:
        return resolved, "", f"not a regular file ({special}): not read"
    return resolved, source_id(st) if stat.S_ISREG(st.st_mode) else "", ""


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _printable_name(name: str) -> tuple[str, bool]:
    """(name as UTF-8 text, was it valid UTF-8?): undecodable bytes become \\x escapes."""
    try:
        name.encode("utf-8")
        return name, True
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace"), False


def scan_folder(
    root: str | os.PathLike,
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    allow_outside_root: bool = False,
) -> pd.DataFrame:
    """All audio files below ``root`` (recursive, case-insensitive extensions), sorted by track_id.

    Directories (and links to directories) named like audio files are skipped and linked
    directories are not followed (no loops); broken links, links that leave the root, FIFOs and
    devices are kept as invalid rows so that they are reported instead of silently vanishing.
    """
    root = Path(root).resolve()
    wanted = {e.lower() for e in extensions}
    rows = []
    pending = [str(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in wanted:
                    rows.append(_scanned_row(entry, root, allow_outside_root))
    rows = [r for r in rows if r is not None]
    rows.sort()
    return pd.DataFrame(rows, columns=list(IDENTITY_COLUMNS))


def _scanned_row(entry: os.DirEntry, root: Path, allow_outside_root: bool) -> tuple | None:
    """One folder-scan row, or None for a link to a directory."""
    relative, valid_name = _printable_name(os.path.relpath(entry.path, root).replace(os.sep, "/"))
    if not valid_name:
        return relative, str(root / relative), "", NOT_UTF8
    resolved, identity, reason = inspect_local(entry.path, root, allow_outside_root)
    if not reason and entry.is_symlink() and os.path.isdir(resolved):
        return None
    return relative, resolved, identity, reason


def scan_uri(root: str, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> pd.DataFrame:
    """All audio objects below a URI prefix (recursive listing), ids relative to the prefix."""
    rows = [
        (rel, uri, f"{size}:{mtime_ns}", "")
        for rel, uri, size, mtime_ns in storage.list_files(root, extensions)
    ]
    return pd.DataFrame(rows, columns=list(IDENTITY_COLUMNS))


def decode_text(data: bytes) -> str:
    """Manifest bytes as text: a byte-order mark decides, else UTF-8, cp1252, latin-1 in turn."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return data.decode(encoding)
    for encoding in TEXT_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte sequence")


def read_manifest_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV/Parquet/JSON(L) manifest (local or URI): metadata types kept, ids as text.

    ``track_id`` and ``path`` come back as strings exactly as written (an integer id 7 is "7",
    never "7.0"), None where absent; unparsable JSON lines become rows with ``invalid_reason``.
    """
    remote = storage.is_remote(path)
    suffix = posixpath.splitext(str(path).split("?", 1)[0])[1] if remote else Path(path).suffix
    kind = MANIFEST_SUFFIXES.get(suffix.lower())
    if kind is None:
        raise ManifestError(
            f"{path}: not a manifest (expected one of {', '.join(sorted(MANIFEST_SUFFIXES))}) "
            "and not a folder"
        )
    try:
        data = storage.read_bytes(str(path)) if remote else Path(path).read_bytes()
        if kind == "parquet":
            return _read_parquet(data)
        text = decode_text(data)
        return _read_csv(text) if kind == "csv" else _read_json_records(text)
    except ManifestError:
        raise
    except Exception as exc:
        detail = f"{exc.__class__.__name__}: {exc}"
        raise ManifestError(f"{path}: cannot read manifest ({detail})") from exc


def _read_csv(text: str) -> pd.DataFrame:
    df = pd.read_csv(
        io.StringIO(text),
        dtype={"track_id": str, "path": str},
        keep_default_na=False,
        na_values=[""],
    )
    return _ids_as_text(df)


def _read_parquet(data: bytes) -> pd.DataFrame:
    """Parquet with ``track_id``/``path`` cast to text in Arrow (an int64 id 7 → "7")."""
    table = pq.read_table(pa.BufferReader(data))
    for name in ("track_id", "path"):
        if name in table.column_names and not pa.types.is_string(table.schema.field(name).type):
            index = table.column_names.index(name)
            table = table.set_column(index, name, pc.cast(table.column(name), pa.string()))
    return _ids_as_text(table.to_pandas())


def _read_json_records(text: str) -> pd.DataFrame:
    """JSON Lines (one object per line) or one JSON array of objects, parsed with ``json``.

    pandas' reader turns an integer id column with one missing value into floats ("1.0");
    parsing each record keeps every value as written.
    """
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = [(n, r) for n, r in enumerate(json.loads(stripped), 1)]
    else:
        records = [
            (n, _parse_line(line, n)) for n, line in enumerate(text.splitlines(), 1) if line.strip()
        ]
    rows = [
        r if isinstance(r, dict) else {"invalid_reason": f"record {n}: {r}"} for n, r in records
    ]
    for row in rows:
        for name in ("track_id", "path"):
            if name in row:
                row[name] = _json_text(row[name])
    return _ids_as_text(pd.DataFrame(rows))


def _parse_line(line: str, number: int) -> dict | str:
    """A JSON object, or the reason the line is not one."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg} at column {exc.colno})"
    return value if isinstance(value, dict) else f"not a JSON object ({type(value).__name__})"


def _json_text(value) -> str | None:
    """A JSON id/path value as text: strings as they are, numbers as written, None for null
    (and for the NaN that some writers put where they mean null)."""
    if _missing(value) or isinstance(value, str):
        return None if _missing(value) else value
    return json.dumps(value)


def _ids_as_text(df: pd.DataFrame) -> pd.DataFrame:
    """``track_id``/``path`` as object columns of str or None (never NaN, never numbers)."""
    for name in ("track_id", "path"):
        if name in df.columns:
            df[name] = [None if _missing(v) else str(v) for v in df[name]]
    return df


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def resolve_manifest(
    df: pd.DataFrame, base_dir: Path | str, allow_outside_root: bool = False
) -> pd.DataFrame:
    """Validate a manifest table and resolve its paths against ``base_dir`` (a folder or a URI).

    Rows whose path is empty, escapes ``base_dir`` (``../``, absolute elsewhere, a link out) or
    names a FIFO/device keep their path but get an ``invalid_reason`` so the pipeline reports
    them as error rows instead of reading them; ids are made unique (see ``assign_track_ids``).
    """
    if "path" not in df.columns:
        columns = ", ".join(map(str, df.columns))
        raise ManifestError(f"manifest has no 'path' column (columns: {columns})")
    reserved = [c for c in ("source_id",) if c in df.columns]
    if reserved:
        raise ManifestError(f"manifest column {reserved[0]!r} is reserved: rename it")
    if df.empty:
        raise ManifestError("manifest has no rows")
    df = df.reset_index(drop=True).copy()
    if "invalid_reason" not in df.columns:
        df["invalid_reason"] = None
    reasons = [r if isinstance(r, str) else "" for r in df["invalid_reason"]]
    raw = [p.strip() if isinstance(p, str) and p.strip() else None for p in df["path"]]
    inspect = (
        _uri_resolver(str(base_dir), allow_outside_root)
        if storage.is_remote(base_dir)
        else _local_resolver(Path(base_dir), allow_outside_root)
    )
    paths, identities = [], []
    for i, value in enumerate(raw):
        if reasons[i] or value is None:
            paths.append(value or "")
            identities.append("")
            reasons[i] = reasons[i] or "empty path"
            continue
        full, identity, reasons[i] = inspect(value)
        paths.append(full)
        identities.append(identity)
    df["track_id"] = assign_track_ids(df.get("track_id"), raw, reasons)
    df["path"], df["source_id"], df["invalid_reason"] = paths, identities, reasons
    columns = list(IDENTITY_COLUMNS) + [c for c in df.columns if c not in IDENTITY_COLUMNS]
    return df[columns]


def assign_track_ids(ids, raw_paths: list, reasons: list[str]) -> list[str]:
    """One unique id per row; ``reasons`` gains the duplicate flags (updated in place).

    A row without an id takes its path as written, a row with neither ``#row<N>`` (N its
    1-based row number); a repeated id keeps its first row and renames the later ones
    ``<id>#dup<k>``, with k chosen so that the new id collides with no id in the manifest.
    """
    given = [
        None if ids is None or _missing(v) or not str(v).strip() else str(v)
        for v in (ids if ids is not None else [None] * len(raw_paths))
    ]
    wanted = [
        g if g is not None else raw_paths[i] if raw_paths[i] else f"#row{i + 1}"
        for i, g in enumerate(given)
    ]
    taken = set(wanted)
    seen: set[str] = set()
    result = []
    for i, track_id in enumerate(wanted):
        if track_id in seen:
            track_id = fresh_id(track_id, taken)
            reasons[i] = "duplicate track_id in manifest (first row kept)"
        seen.add(track_id)
        result.append(track_id)
    return result


def fresh_id(track_id: str, taken: set[str]) -> str:
    k = 1
    while f"{track_id}#dup{k}" in taken:
        k += 1
    taken.add(f"{track_id}#dup{k}")
    return f"{track_id}#dup{k}"


def _local_resolver(base_dir: Path, allow_outside_root: bool):
    """value → (resolved path, source_id, invalid_reason) for a manifest on a local disk.

    file:// URIs are local paths and get the same checks; other URIs are read as given.
    """
    base = base_dir.resolve()

    def inspect(value: str) -> tuple[str, str, str]:
        if storage.is_remote(value):
            return value, "", ""
        value = storage.local_path(value)
        return inspect_local(os.path.join(base, value), base, allow_outside_root)

    return inspect


def _uri_resolver(base_uri: str, allow_outside_root: bool):
    """value → (URI, source_id, invalid_reason): relative paths name objects beside it.

    The identity of an object named in a remote manifest is left empty here (one request per
    object would be a listing's worth of requests); resume then keys on track_id alone.
    """
    _, base = storage.resolve(base_uri)
    escapes = f"path escapes the manifest's folder {base_uri} (use --allow-outside-root)"

    def inspect(value: str) -> tuple[str, str, str]:
        if storage.is_uri(value):
            return value, "", ""
        full = posixpath.normpath(posixpath.join(base, value))
        inside = not value.startswith("/") and full.startswith(base + "/")
        return storage.to_uri(base_uri, full), "", "" if inside or allow_outside_root else escapes

    return inspect


def rename_key_columns(
    df: pd.DataFrame, id_col: str | None = None, path_col: str | None = None
) -> pd.DataFrame:
    """The manifest with the user's id/path columns (``--id-col``/``--path-col``, e.g. seed 000's
    ``song_id``/``audio_path``) renamed to ``track_id``/``path``, values as text."""
    renames = {src: dst for src, dst in ((id_col, "track_id"), (path_col, "path")) if src}
    for src, dst in renames.items():
        flag = "--id-col" if dst == "track_id" else "--path-col"
        if src not in df.columns:
            shown = ", ".join(map(str, df.columns))
            raise ManifestError(f"{flag} {src!r} is not a manifest column (columns: {shown})")
        if dst in df.columns and dst != src:
            raise ManifestError(f"{flag} {src!r}: the manifest already has a {dst!r} column")
    return _ids_as_text(df.rename(columns=renames)) if renames else df


def build_manifest(
    input_path: str,
    allow_outside_root: bool = False,
    limit: int | None = None,
    id_col: str | None = None,
    path_col: str | None = None,
) -> pd.DataFrame:
    """The manifest of a folder or a manifest file; raises ManifestError for user errors.

    Columns: track_id, path, source_id, invalid_reason (empty when the row is usable),
    metadata... ``limit`` keeps the first rows (of the manifest, or of the sorted folder scan).
    ``id_col``/``path_col`` name the manifest's own id and path columns.
    """
    input_path = storage.local_path(input_path)
    remote = storage.is_remote(input_path)
    kind = _remote_kind(input_path) if remote else _local_kind(Path(input_path))
    if kind is None:
        raise ManifestError(f"input not found: {input_path}")
    if kind == "dir":
        df = (
            scan_uri(input_path)
            if remote
            else scan_folder(input_path, allow_outside_root=allow_outside_root)
        )
        if df.empty:
            extensions = ", ".join(AUDIO_EXTENSIONS)
            raise ManifestError(f"no audio files ({extensions}) found under {input_path}")
        return df.iloc[:limit].reset_index(drop=True)
    parent = _uri_parent(input_path) if remote else Path(input_path).parent
    table = rename_key_columns(read_manifest_file(input_path), id_col, path_col)
    return resolve_manifest(table.iloc[:limit], parent, allow_outside_root)


def _local_kind(p: Path) -> str | None:
    """'dir', 'file' or None; a FIFO or device is refused before anything opens it."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"cannot read {p} ({exc.strerror})") from exc
    if stat.S_ISDIR(mode):
        return "dir"
    special = special_file_kind(mode)
    if special:
        raise ManifestError(f"{p} is {special}, not a manifest file or a folder: not read")
    return "file"


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
