"""Decode any supported audio file to a mono float32 signal at a requested rate.

Two decoders, tried in the order ``config.DECODER_ORDER`` gives for the file's extension (chosen
by bench/decode.py), the other as fallback: soundfile (libsndfile: wav/flac/ogg/aiff/mp3) and
PyAV (ffmpeg: every codec, and the faster one for opus). Both paths stop
reading after ``max_duration_s`` so a two-hour file never lands whole in memory. A path may be
an s3:// or gs:// URI (read through ranged block reads, see ``storage``) or a file:// URI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import soxr

from soundclust_ray import storage
from soundclust_ray.audio.errors import AudioDecodeError
from soundclust_ray.config import decoders_for

Source = str | IO[bytes]
"""A local path or an open, seekable binary file object (remote audio)."""


def _mono(frames: np.ndarray) -> np.ndarray:
    """Average channels (frames × channels → frames), the way librosa's ``to_mono`` does.

    Column by column rather than ``frames.mean(axis=1)``: numpy reduces a 2-wide axis a
    frame at a time (12 ms for 30 s of stereo, a fifth of the timbre stage's time per track)
    where the column sums take 3 ms; the float32 results are bit-identical.
    """
    if frames.ndim == 1:
        return frames
    if frames.shape[1] == 1:
        return frames[:, 0]
    mono = frames[:, 0] + frames[:, 1]
    for channel in range(2, frames.shape[1]):
        mono += frames[:, channel]
    mono /= np.float32(frames.shape[1])
    return mono


def _read_soundfile(path: Source, max_duration_s: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(path) as f:
        sr = f.samplerate
        n = f.frames if max_duration_s is None else min(f.frames, int(max_duration_s * sr))
        data = f.read(frames=n, dtype="float32", always_2d=True)
    return _mono(data), sr


def _read_pyav(path: Source, max_duration_s: float | None) -> tuple[np.ndarray, int]:
    try:
        return _decode_pyav(path, max_duration_s)
    except AudioDecodeError as exc:
        raise AudioDecodeError(f"not a decodable audio file ({exc})") from exc
    except Exception as exc:  # PyAV raises many FFmpegError/InvalidDataError subclasses
        detail = f"{exc.__class__.__name__}: {exc}"
        raise AudioDecodeError(f"not a decodable audio file ({detail})") from exc


def _decode_pyav(path: Source, max_duration_s: float | None) -> tuple[np.ndarray, int]:
    import av

    with av.open(path) as container:
        if not container.streams.audio:
            raise AudioDecodeError("no audio stream")
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate or stream.rate
        if not sr:
            raise AudioDecodeError("audio stream has no sample rate")
        limit = None if max_duration_s is None else int(max_duration_s * sr)
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sr)
        chunks: list[np.ndarray] = []
        total = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                arr = out.to_ndarray()[0]
                chunks.append(arr)
                total += arr.shape[0]
            if limit is not None and total >= limit:
                break
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray()[0])
    if not chunks:
        raise AudioDecodeError("no audio frames could be decoded")
    y = np.concatenate(chunks).astype(np.float32, copy=False)
    if limit is not None:
        y = y[:limit]
    return y, int(sr)


def read_audio(
    path: str | os.PathLike, max_duration_s: float | None = None
) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the file's native sample rate; ``path`` may be a URI.

    Raises:
        AudioDecodeError: the file is missing, empty, a directory, or not decodable audio.
    """
    path = storage.local_path(path)
    if storage.is_remote(path):
        return _read_remote(path, max_duration_s)
    p = Path(path)
    if not p.exists():
        raise AudioDecodeError(f"file not found: {path}")
    if p.is_dir():
        raise AudioDecodeError(f"is a directory, not an audio file: {path}")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(f"permission denied: {path}")
    if p.stat().st_size == 0:
        raise AudioDecodeError(f"empty file (0 bytes): {path}")
    return _decode(lambda: path, max_duration_s, p.suffix)


def _read_remote(uri: str, max_duration_s: float | None) -> tuple[np.ndarray, int]:
    """Object-store audio: the same checks and decoders as a local file, over ranged reads."""
    import pyarrow.fs as pafs

    try:
        info = storage.file_info(uri)
    except Exception as exc:  # noqa: BLE001 - credentials, network, bad bucket: one error row
        raise AudioDecodeError(f"cannot access {uri} ({exc.__class__.__name__}: {exc})") from exc
    if info.type == pafs.FileType.NotFound:
        raise AudioDecodeError(f"file not found: {uri}")
    if info.type == pafs.FileType.Directory:
        raise AudioDecodeError(f"is a directory, not an audio file: {uri}")
    if info.size == 0:
        raise AudioDecodeError(f"empty file (0 bytes): {uri}")
    try:
        reader = storage.RangeReader(uri)
    except Exception as exc:  # noqa: BLE001 - as above
        raise AudioDecodeError(f"cannot open {uri} ({exc.__class__.__name__}: {exc})") from exc
    with reader:

        def rewound() -> storage.RangeReader:
            reader.seek(0)
            return reader

        return _decode(rewound, max_duration_s, Path(uri).suffix)


def read_with(decoder: str, source: Source, max_duration_s: float | None) -> tuple[np.ndarray, int]:
    """One named decoder (``soundfile`` or ``pyav``) on one source, from its start."""
    reader = _read_soundfile if decoder == "soundfile" else _read_pyav
    return reader(source, max_duration_s)


def _decode(
    open_source: Callable[[], Source], max_duration_s: float | None, suffix: str
) -> tuple[np.ndarray, int]:
    """The codec's decoders in config.DECODER_ORDER (bench/decode.py), each from the start,
    until one reads the file (a file whose extension lies still decodes); PyAV's error, the
    more telling, when none does."""
    errors: dict[str, Exception] = {}
    for decoder in decoders_for(suffix):
        try:
            y, sr = read_with(decoder, open_source(), max_duration_s)
            break
        except Exception as exc:  # noqa: BLE001 - the next decoder may read it
            errors[decoder] = exc
    else:
        error = errors.get("pyav") or next(iter(errors.values()))
        if isinstance(error, AudioDecodeError):
            raise error
        raise AudioDecodeError(f"not a decodable audio file ({error})") from error
    if y.size == 0:
        raise AudioDecodeError("decoded to zero samples")
    return y, sr


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality resampling with soxr (librosa's default 'soxr_hq' method)."""
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    return soxr.resample(y, orig_sr, target_sr, quality="soxr_hq").astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    max_duration_s: float | None = None,
    min_duration_s: float = 0.0,
) -> np.ndarray:
    """Decode, downmix and resample one track; see :func:`load_audio_rates`.

    Raises:
        AudioDecodeError: unreadable file, non-finite samples, or shorter than ``min_duration_s``.
    """
    return load_audio_rates(path, (sample_rate,), max_duration_s, min_duration_s)[sample_rate]


def load_audio_rates(
    path: str | os.PathLike,
    sample_rates: tuple[int, ...] | list[int],
    max_duration_s: float | None = None,
    min_duration_s: float = 0.0,
) -> dict[int, np.ndarray]:
    """Decode and downmix one track once, then resample it to each rate (rate → samples).

    The one entry point every stage uses: a run's products that read the same track at
    different rates (timbre at 22.05 kHz, musicnn at 16 kHz, CLAP at 48 kHz) share its decode,
    the larger cost (an mp3: ≈ 93 ms per 60 s against ≈ 10 ms per resample). Each signal is
    bit-identical to decoding for that rate alone.

    Raises:
        AudioDecodeError: unreadable file, non-finite samples, or shorter than ``min_duration_s``.
    """
    y, sr = read_audio(path, max_duration_s)
    if not np.isfinite(y).all():
        raise AudioDecodeError("audio contains NaN or infinite samples")
    duration = y.shape[0] / sr
    if duration < min_duration_s:
        raise AudioDecodeError(f"too short: {duration:.2f} s < {min_duration_s:.2f} s")
    return {rate: resample(y, sr, rate) for rate in dict.fromkeys(sample_rates)}
