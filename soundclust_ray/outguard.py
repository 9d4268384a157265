"""Guard OUT before a run writes into it: an ownership marker, a safe --overwrite, one writer.

soundclust never deletes a file it did not write. A folder becomes a soundclust OUT when a run
starts in it while it is new or empty; that run writes ``OUT/.soundclust.json`` (the marker: a
format version and the top-level names soundclust owns there). ``--overwrite`` removes only
those names, never one that holds the input, and a non-empty folder without the marker is
refused. An OUT written before the marker existed (it has ``run.json``) is adopted in place:
the marker lists the soundclust names found in it and nothing else.

One writer at a time: ``OUT/.soundclust.lock`` holds the pid, host and start time of the run
that writes OUT. A lock whose process is gone (same host, pid dead or reused) is stale and
taken over. On object storage there is no atomic create-if-absent through pyarrow, so remote
OUTs get the marker but no lock: two runs on one remote OUT are the user's to avoid.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

import psutil
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from soundclust_ray import outdir
from soundclust_ray.errors import UserError

MARKER = ".soundclust.json"
LOCK = ".soundclust.lock"
QUARANTINE = "quarantine"
MARKER_FORMAT = 2
"""Version of OUT's layout; a marker with a higher one was written by a newer soundclust.
1: every feature family in one product (``OUT/features``); 2: one product per family
(``OUT/features/<family>``), each with its own config hash (``upgrade.py`` converts 1 → 2)."""
ADOPTED_FORMAT = 1
"""The layout of an OUT written before the marker existed (the same as format 1)."""

OWNED_NAMES = (
    outdir.RUN,
    outdir.MANIFEST,
    outdir.ERRORS,
    outdir.ERRORS_DIR,
    outdir.FEATURES,
    outdir.FEATURE_CHUNKS,
    outdir.EMBEDDINGS,
    outdir.CLUSTERS,
    outdir.OOF,
    outdir.OOF_DIR,
    outdir.METRICS,
    outdir.SUMMARIES,
    outdir.REPORT,
    outdir.ID_TO_INDEX,
    outdir.CORPUS,
    outdir.LOGS,
    outdir.INDEX,
    outdir.DUPLICATES,
    outdir.FITTED,
    outdir.EXPORT,
    outdir.RECOMPUTE,
    QUARANTINE,
)
"""Every top-level name a soundclust run may create in OUT: what its marker claims."""


def _entries(fs: pafs.FileSystem, base: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
    return sorted(i.base_name for i in infos)


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_out_usable(out: str) -> None:
    """OUT must be a folder that exists or can be created: one line before Ray starts."""
    if "://" in out:
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out} cannot be created ({exc.strerror})") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"--out {out} is not writable")


def read_marker(out: str) -> dict | None:
    """The marker of a soundclust OUT, or None when OUT has none."""
    data = outdir.read_bytes(out, MARKER)
    if data is None:
        return None
    try:
        marker = json.loads(data.decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{outdir.path(out, MARKER)} is damaged ({exc}): restore or delete it"
        ) from exc
    return marker if isinstance(marker, dict) else {}


def claim_out(out: str, inputs: list[str]) -> dict:
    """Make OUT soundclust's (new, empty or old-format OUT) or refuse it; returns the marker.

    ``inputs`` are local input paths: an OUT that is, or holds, an input folder or manifest and
    is not already soundclust's is refused, so a run never mixes its files into the user's. The
    demo's OUT (only ``corpus/``, the run's input) is soundclust's: the demo wrote it.
    """
    fs, base = outdir.resolve(out)
    marker = read_marker(out)
    if marker is not None:
        if int(marker.get("format", 0)) > MARKER_FORMAT:
            raise UserError(
                f"--out {out} was written by a newer soundclust: upgrade or use a new --out"
            )
        return marker
    entries = [e for e in _entries(fs, base) if e != LOCK]
    demo_corpus = outdir.join(base, outdir.CORPUS)
    if entries == [outdir.CORPUS] and any(_inside(p, demo_corpus) for p in inputs):
        entries = []
    if entries and outdir.RUN not in entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise UserError(
            f"--out {out} is not empty ({shown}) and was not written by soundclust: "
            "give a new or empty folder"
        )
    held = [p for p in inputs if "://" not in p and _inside(p, base)]
    if entries and held:
        raise UserError(f"--out {out} holds the input {held[0]}: give a separate --out")
    marker = {"format": ADOPTED_FORMAT if entries else MARKER_FORMAT}
    marker["owned"] = sorted(set(OWNED_NAMES))
    if entries:
        marker["adopted"] = sorted(e for e in entries if e in OWNED_NAMES)
    return write_marker(out, marker)


def write_marker(out: str, marker: dict) -> dict:
    """Write OUT's marker (atomically); returns it."""
    outdir.write_bytes(out, MARKER, json.dumps(marker, indent=2, sort_keys=True).encode())
    return marker


def remove_owned(out: str, marker: dict, inputs: list[str]) -> list[str]:
    """``--overwrite``: delete what soundclust owns in OUT, nothing else; returns what went.

    An owned entry that holds an input (the demo's OUT/corpus) is kept; OUT itself equal to an
    input folder is refused.
    """
    fs, base = outdir.resolve(out)
    local_inputs = [p for p in inputs if "://" not in p]
    if any(os.path.realpath(p) == os.path.realpath(base) for p in local_inputs):
        raise UserError(f"--out {out} is the input folder: --overwrite would delete your audio")
    owned = set(marker.get("adopted", marker.get("owned", [])))
    owned |= set(marker.get("owned", []))
    removed = []
    for name in _entries(fs, base):
        target = outdir.join(base, name)
        if not (name in owned or outdir.is_temporary(name)):
            continue
        if any(_inside(p, target) for p in local_inputs):
            continue
        info = fs.get_file_info(target)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(target)
        else:
            fs.delete_file(target)
        removed.append(name)
    return removed


def _lock_record() -> dict:
    me = psutil.Process()
    return {
        "pid": me.pid,
        "host": socket.gethostname(),
        "created": me.create_time(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _is_stale(record: dict) -> bool:
    """A lock of this host whose process is gone, or whose pid now belongs to another process."""
    if record.get("host") != socket.gethostname():
        return False
    try:
        process = psutil.Process(int(record.get("pid", -1)))
    except (psutil.NoSuchProcess, ValueError):
        return True
    return abs(process.create_time() - float(record.get("created", 0))) > 1.0


@contextlib.contextmanager
def hold_lock(out: str) -> Iterator[None]:
    """Hold OUT's lock for a run; a second run on the same OUT gets one line naming the holder."""
    if "://" in out:
        yield
        return
    lock = os.path.join(out, LOCK)
    record = _lock_record()
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if holder is not None and not _is_stale(holder):
                raise UserError(
                    f"--out {out} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                    f"since {holder.get('started')} (if that run is gone, delete {lock})"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        break
    else:
        raise UserError(f"--out {out}: could not take the lock {lock}")
    try:
        yield
    finally:
        if _read_lock(lock) == record:
            os.unlink(lock)


def _read_lock(lock: str) -> dict | None:
    """The lock's record; {} when unreadable (half written), None when it is gone."""
    try:
        with open(lock) as f:
            value = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def broken_shards(out: str, product: str) -> list[str]:
    """OUT-relative names of the shards of ``product`` that Parquet cannot read (truncated,
    corrupt, not Parquet): footer and track_id column are read, as resume does."""
    fs, base = outdir.resolve(out)
    broken = []
    for name in outdir.list_files(out, product):
        try:
            pq.ParquetFile(outdir.join(base, product, name), filesystem=fs).read(["track_id"])
        except Exception:  # noqa: BLE001 - every way of being unreadable counts
            broken.append(f"{product}/{name}")
    return broken


def quarantine_broken_shards(out: str, product: str) -> list[str]:
    """Move every unreadable shard of ``product`` to OUT/quarantine/; their tracks are then
    missing, so the run recomputes them. Returns the moved files' OUT-relative names."""
    fs, base = outdir.resolve(out)
    moved = broken_shards(out, product)
    for name in moved:
        fs.create_dir(outdir.join(base, QUARANTINE), recursive=True)
        fs.move(outdir.join(base, name), outdir.join(base, QUARANTINE, name.replace("/", "__")))
    return moved


def _previous_identities(out: str) -> dict[str, str] | None:
    """track_id → source_id of the last run's manifest; None when it recorded no identities."""
    table = outdir.read_table(out, outdir.MANIFEST)
    if table is None or "source_id" not in table.column_names:
        return None
    return dict(
        zip(
            table.column("track_id").to_pylist(), table.column("source_id").to_pylist(), strict=True
        )
    )


def stale_tracks(out: str, manifest) -> tuple[set[str], set[str]]:
    """(changed, removed) track ids against the last run's manifest in OUT.

    Changed: the file's identity (size, mtime) differs, or the file is gone while its row
    stays. Removed: the row is no longer in the input, or is now an invalid row.
    """
    previous = _previous_identities(out)
    if not previous:
        return set(), set()
    valid = manifest[manifest["invalid_reason"] == ""]
    current = dict(zip(valid["track_id"], valid["source_id"], strict=True))
    removed = {t for t, sid in previous.items() if sid and t not in current}
    changed = {
        t for t, sid in current.items() if previous.get(t, sid) and previous.get(t, sid) != sid
    }
    return changed, removed


def drop_tracks(out: str, product: str, stale: set[str]) -> int:
    """Rewrite (atomically) every shard of ``product`` that holds a ``stale`` track without
    those rows, so resume recomputes them; returns the rows dropped."""
    import pyarrow.compute as pc

    fs, base = outdir.resolve(out)
    dropped = 0
    value_set = pa.array(sorted(stale), pa.string())
    for name in outdir.list_files(out, product):
        target = outdir.join(base, product, name)
        table = pq.read_table(target, filesystem=fs)
        hit = pc.is_in(table.column("track_id"), value_set=value_set)
        n = pc.sum(hit).as_py() or 0
        if not n:
            continue
        kept = table.filter(pc.invert(hit))
        if kept.num_rows:
            outdir.write_table_atomic(fs, target, kept)
        else:
            fs.delete_file(target)
        dropped += n
    return dropped
