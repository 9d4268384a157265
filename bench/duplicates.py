"""Near-duplicate threshold on real audio: re-encodes of the same clip vs distinct songs.

Takes the real clips of /work/shared/data (mer4q_genre: 315 mp3, gtzan_mini: 37 wav), re-encodes
a seeded subset with PyAV (mp3 64 kb/s, Ogg Opus 96 kb/s, FLAC, and a 22.05 kHz resampled WAV), and
computes two representations with the package's own functions: timbre features (standardized,
as the clustering does) and MSD_musicnn penultimates (centred + L2, seed 000). For each cosine
threshold it prints the share of (re-encode, original) pairs found and the number of pairs of
distinct originals above it (false positives among 352 songs = 61,776 pairs).

    .venv/bin/python bench/duplicates.py [--clips 36] [--recompute]

Decoded vectors are cached under bench/.work/duplicates/ (about 6 min on 2 cores the first time).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np

from soundclust_ray.analysis.search import l2_normalize_inplace
from soundclust_ray.audio.decode import load_audio
from soundclust_ray.config import RANDOM_STATE, FeaturesConfig, MusicnnConfig
from soundclust_ray.embed.postprocess import center_and_normalize
from soundclust_ray.features.registry import FAMILIES, compute_family

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WORK = Path(__file__).parent / ".work" / "duplicates"
ENCODINGS = {
    "mp3_64k": ("mp3", "libmp3lame", 64_000, None),
    "opus_96k": ("ogg", "libopus", 96_000, 48000),
    "flac": ("flac", "flac", None, None),
    "wav_22k": ("wav", "pcm_s16le", None, 22050),
}
THRESHOLDS = (0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)


def originals() -> list[Path]:
    mer = sorted((DATA / "mer4q_genre" / "audio").rglob("*.mp3"))
    return mer + sorted((DATA / "gtzan_mini").glob("*.wav"))


def reencode(src: Path, dst: Path, codec: str, bit_rate: int | None, rate: int | None) -> None:
    """Decode ``src`` and write it again with another codec/bitrate/rate (PyAV, no ffmpeg)."""
    y, sr = decode_stereo(src)
    out_rate = rate or sr
    with av.open(str(dst), "w") as container:
        stream = container.add_stream(codec, rate=out_rate)
        if bit_rate:
            stream.bit_rate = bit_rate
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=out_rate)
        frame = av.AudioFrame.from_ndarray(y[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def decode_stereo(path: Path) -> tuple[np.ndarray, int]:
    from soundclust_ray.audio.decode import read_audio

    y, sr = read_audio(str(path), None)
    return np.ascontiguousarray(y, dtype=np.float32), sr


def make_copies(clips: list[Path]) -> list[tuple[Path, Path, str]]:
    """(copy, original, encoding) for each clip and encoding, written once under WORK."""
    copies = []
    for src in clips:
        for name, (ext, codec, bit_rate, rate) in ENCODINGS.items():
            dst = WORK / "copies" / f"{src.parent.name}_{src.stem}.{name}.{ext}"
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                reencode(src, dst, codec, bit_rate, rate)
            copies.append((dst, src, name))
    return copies


def vectors(paths: list[Path], recompute: bool) -> tuple[np.ndarray, np.ndarray]:
    """(timbre features, mean MSD_musicnn penultimate) per path, cached by file name."""
    from soundclust_ray.embed.musicnn import MusicnnEmbedder

    cache = WORK / "vectors.npz"
    names = np.array([str(p) for p in paths])
    if cache.exists() and not recompute:
        saved = np.load(cache)
        if np.array_equal(saved["names"], names):
            return saved["timbre"], saved["musicnn"]
    cfg = FeaturesConfig()
    model = MusicnnEmbedder(MusicnnConfig())
    timbre, musicnn = [], []
    for i, path in enumerate(paths):
        feats = compute_family(FAMILIES["timbre"], {22050: load_audio(path, 22050)}, cfg)
        timbre.append(np.array(list(feats.values()), dtype=np.float32))
        (win,) = model.embed_tracks([model.prepare(load_audio(path, 16000))])
        musicnn.append(win.embeddings.mean(axis=0))
        if i % 50 == 0:
            print(f"  {i}/{len(paths)} {path.name}", flush=True)
    T, M = np.vstack(timbre), np.vstack(musicnn).astype(np.float32)
    np.savez(cache, names=names, timbre=T, musicnn=M)
    return T, M


def geometry(name: str, X: np.ndarray) -> np.ndarray:
    """The clustering's post-processing, then L2: standardize features, centre embeddings."""
    if name == "timbre":
        X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
        return l2_normalize_inplace(X.astype(np.float32))
    return center_and_normalize(X)


def report(name: str, U: np.ndarray, n_orig: int, copies, index_of) -> None:
    S = U @ U.T
    pair = np.array([S[n_orig + j, index_of[src]] for j, (_, src, _) in enumerate(copies)])
    distinct = S[:n_orig, :n_orig][np.triu_indices(n_orig, 1)]
    nearest = np.argmax(S[n_orig:, :n_orig], axis=1)
    top1 = np.mean([nearest[j] == index_of[src] for j, (_, src, _) in enumerate(copies)])
    print(
        f"\n{name}: re-encode vs original cosine min {pair.min():.4f} / median "
        f"{np.median(pair):.4f}; distinct songs max {distinct.max():.4f}, 99.9th pct "
        f"{np.quantile(distinct, 0.999):.4f}; original is the copy's nearest: {top1:.3f}"
    )
    for enc in ENCODINGS:
        sel = np.array([e == enc for _, _, e in copies])
        print(f"  {enc:<8} min {pair[sel].min():.4f}  median {np.median(pair[sel]):.4f}")
    print(f"  {'threshold':>9} {'copies found':>13} {'distinct pairs above':>21}")
    for t in THRESHOLDS:
        print(f"  {t:>9.2f} {np.mean(pair >= t):>13.3f} {int((distinct >= t).sum()):>21}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=36, help="originals re-encoded")
    parser.add_argument("--recompute", action="store_true")
    args = parser.parse_args()
    songs = originals()
    rng = np.random.default_rng(RANDOM_STATE)
    clips = [songs[i] for i in sorted(rng.choice(len(songs), args.clips, replace=False))]
    copies = make_copies(clips)
    print(f"{len(songs)} originals, {len(copies)} re-encodes of {len(clips)} of them")
    T, M = vectors(songs + [c for c, _, _ in copies], args.recompute)
    index_of = {p: i for i, p in enumerate(songs)}
    for name, X in (("timbre", T), ("MSD_musicnn", M)):
        report(name, geometry(name, X), len(songs), copies, index_of)


if __name__ == "__main__":
    main()
