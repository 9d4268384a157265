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
