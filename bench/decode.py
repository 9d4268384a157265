"""Decoders per codec: soundfile (libsndfile) vs PyAV (ffmpeg) vs librosa.load, same files, one run.

Real clips (default: 8 of ``shared/data/mer4q_genre``'s 30 s mp3s) are decoded once and
re-encoded into every codec a corpus brings (wav, flac, ogg/vorbis, mp3, opus, m4a/aac) under a
temporary folder. Each decoder then reads every file whole at its native rate, mono, one thread,
rounds alternating the decoders' order; the table gives median milliseconds per clip and which
decoder soundclust tries first for that codec (``config.DECODER_ORDER``, chosen from this table).
A decoder that cannot read a codec shows "fails".

    .venv/bin/python bench/decode.py [--clips 8] [--rounds 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from soundclust_ray.audio import decode  # noqa: E402
from soundclust_ray.config import DECODER_ORDER, decoders_for  # noqa: E402

MER4Q = REPO.parent / "shared" / "data" / "mer4q_genre" / "audio"
RATE = 44100
CODECS = {  # extension: (PyAV codec, container format) or None for soundfile's own writer
    ".wav": None,
    ".flac": None,
    ".ogg": None,
    ".mp3": ("libmp3lame", "mp3"),
    ".opus": ("libopus", "ogg"),
    ".m4a": ("aac", "mp4"),
}


def encode(y: np.ndarray, path: Path) -> None:
    """``y`` (mono float32 at RATE; 48 kHz for opus) written in the codec of ``path``'s suffix."""
    import soundfile as sf

    spec = CODECS[path.suffix]
    if spec is None:
        sf.write(path, y, RATE)
        return
    import av

    rate = 48000 if path.suffix == ".opus" else RATE
    if rate != RATE:
        y = decode.resample(y, RATE, rate)
    with av.open(str(path), "w", format=spec[1]) as out:
        stream = out.add_stream(spec[0], rate=rate, layout="mono")
        for start in range(0, len(y), 4096):
            frame = av.AudioFrame.from_ndarray(y[None, start : start + 4096], "fltp", "mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def librosa_load(path: str) -> tuple[np.ndarray, int]:
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return librosa.load(path, sr=None, mono=True)


DECODERS = {
    "soundfile": lambda p: decode.read_with("soundfile", p, None),
    "pyav": lambda p: decode.read_with("pyav", p, None),
    "librosa": librosa_load,
}


def time_decoder(name: str, paths: list[str]) -> float | None:
    """Milliseconds per file of one decoder over ``paths``; None when it cannot read them."""
    t0 = time.perf_counter()
    try:
        for path in paths:
            DECODERS[name](path)
    except Exception:  # noqa: BLE001 - a decoder refusing a codec is a table cell, not an error
        return None
    return (time.perf_counter() - t0) * 1e3 / len(paths)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    every = sorted(MER4Q.rglob("*.mp3"))
    sources = every[:: max(1, len(every) // a.clips)][: a.clips]  # spread over the genres
    work = Path(tempfile.mkdtemp(prefix="bench_decode_"))
    try:
        files: dict[str, list[str]] = {ext: [] for ext in CODECS}
        for i, src in enumerate(sources):
            y = decode.load_audio(str(src), RATE)
            for ext in CODECS:
                path = work / f"{i:02d}{ext}"
                encode(y, path)
                files[ext].append(str(path))
        print(f"decode per codec: {len(sources)} real 30 s clips re-encoded, {a.rounds} rounds")
        print(f"{'codec':6s} {'soundfile':>10s} {'pyav':>8s} {'librosa':>8s}  first tried")
        for ext, paths in files.items():
            times: dict[str, list[float | None]] = {name: [] for name in DECODERS}
            for r in range(a.rounds):
                order = list(DECODERS) if r % 2 == 0 else list(reversed(DECODERS))
                for name in order:
                    times[name].append(time_decoder(name, paths))
            cells = []
            for name in DECODERS:
                got = [t for t in times[name] if t is not None]
                cells.append(f"{statistics.median(got):.0f} ms" if got else "fails")
            first = decoders_for(ext)[0]
            print(f"{ext:6s} {cells[0]:>10s} {cells[1]:>8s} {cells[2]:>8s}  {first}")
        print(f"DECODER_ORDER = {DECODER_ORDER}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
