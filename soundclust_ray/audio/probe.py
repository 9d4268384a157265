"""Track durations from file headers, without decoding (for the classic chunk cap)."""

from __future__ import annotations

import math

from soundclust_ray.audio.decode import read_audio


def probe_duration(path: str) -> float:
    """Duration in seconds from the container header; decodes only when no header says it.

    Returns NaN for files that cannot be read at all (they fail later, as error rows).
    """
    try:
        if "://" not in path:
            import soundfile as sf

            try:
                info = sf.info(path)
                if info.frames > 0 and info.samplerate > 0:
                    return info.frames / info.samplerate
            except Exception:  # noqa: BLE001 - not a libsndfile format; try ffmpeg below
                pass
            import av

            with av.open(path) as container:
                if container.duration:
                    return container.duration / 1_000_000
        y, sr = read_audio(path)
        return len(y) / sr
    except Exception:  # noqa: BLE001 - unreadable files are reported by the feature stage
        return math.nan


HEADER_COLUMNS = ("duration_sec", "sample_rate", "channels")
"""Per-track header facts recorded in the manifest, under seed 002's column names."""


def probe_header(path: str) -> tuple[float, float, float]:
    """(duration_sec, sample_rate, channels) from a local file's header, NaN where unknown.

    Header reads only (milliseconds a file), so listing a corpus can record them for every track;
    remote paths are left NaN rather than fetched twice.
    """
    unknown = (math.nan, math.nan, math.nan)
    if "://" in path:
        return unknown
    try:
        import soundfile as sf

        info = sf.info(path)
        return info.frames / info.samplerate, float(info.samplerate), float(info.channels)
    except Exception:  # noqa: BLE001 - not a libsndfile format; ffmpeg reads the rest
        pass
    try:
        import av

        with av.open(path) as container:
            stream = container.streams.audio[0]
            seconds = container.duration / 1_000_000 if container.duration else math.nan
            return seconds, float(stream.rate or math.nan), float(stream.channels or math.nan)
    except Exception:  # noqa: BLE001 - unreadable files become error rows in the feature stage
        return unknown


def add_header_columns(manifest, valid_mask) -> None:
    """Fill ``HEADER_COLUMNS`` in place for the valid rows; a column the manifest already has
    (the user's own metadata) is kept as it is."""
    missing = [c for c in HEADER_COLUMNS if c not in manifest.columns]
    if not missing:
        return
    facts = [
        probe_header(str(p)) if ok else (math.nan,) * 3
        for p, ok in zip(manifest["path"], valid_mask, strict=True)
    ]
    for i, name in enumerate(HEADER_COLUMNS):
        if name in missing:
            manifest[name] = [f[i] for f in facts]
