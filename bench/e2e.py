"""End to end: ``soundclust run`` against the seed-002 serial loop doing the same work, one run.

Both sides start as fresh processes on the same real clips (default: every mp3 of
``shared/data/mer4q_genre``, 30 s each; ``--clips DIR``), and both are timed from
process start to the last output, imports and compilation included:

- ``timbre``: ``soundclust run CLIPS --out OUT --features timbre --embed none --k K`` against
  seed 002's notebook as a loop (``tests/oracles/features_reference.timbre_from_path`` per track:
  librosa.load at 22.05 kHz, the seed's mel/MFCC/spectral statistics; then StandardScaler,
  KMeans(n_init 10), HDBSCAN(4, 2), UMAP(10, 0.1) and PCA(2) on all rows);
- ``default``: ``soundclust run CLIPS --out OUT --k K`` (timbre + MSD_musicnn, its tags
  clustered) against the same loop that also embeds each track with musicnn in turn (16 kHz
  decode, the shipped model on one track's patches).

Rounds alternate seed loop and ours so that load from other processes hits both alike; the
ratio is the median seed time over the median of ours (issue #17: timbre ≥ 3.5× on 2 cores).
``--clip-seconds 60`` makes the issue's corpus of 60 s mp3s first (once, under bench/.work/):
each clip two consecutive mer4q clips joined, 44.1 kHz stereo, 192 kbit/s, encoded with PyAV.

    .venv/bin/python bench/e2e.py [--mode timbre|default|both] [--limit N] [--rounds 2] [--k 7]
        [--clip-seconds 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MER4Q = REPO.parent / "shared" / "data" / "mer4q_genre"
SOUNDCLUST = Path(sys.executable).with_name("soundclust")


def clip_paths(source: Path, limit: int | None) -> list[str]:
    """The mp3/wav/flac/ogg files under a folder, sorted (at most ``limit``)."""
    exts = {".mp3", ".wav", ".flac", ".ogg"}
    paths = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in exts)
    return paths[:limit] if limit else paths


LONG_CLIPS = REPO / "bench" / ".work" / "e2e_clips"


def encode_mp3(path: Path, y, sr: int) -> None:
    """Write stereo float32 samples (frames x 2) as a 192 kbit/s mp3."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp3", rate=sr)
        stream.layout = "stereo"
        stream.bit_rate = 192_000
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(y.T, dtype=np.float32), format="fltp", layout="stereo"
        )
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def long_clips(source: Path, seconds: float, count: int) -> Path:
    """``count`` clips of ``seconds``: each joins consecutive source clips of the first one's
    sample rate (mer4q mixes 32, 22.05 and 44.1 kHz), made once."""
    import numpy as np
    import soundfile as sf

    folder = LONG_CLIPS / f"{int(seconds)}s"
    if len(list(folder.glob("*.mp3"))) >= count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    paths = clip_paths(source, None)
    rates = [sf.info(q).samplerate for q in paths]
    for i in range(count):
        sr = rates[i % len(paths)]
        same = [q for q, r in zip(paths, rates, strict=True) if r == sr]
        start, parts, total = same.index(paths[i % len(paths)]), [], 0
        while total < seconds * sr:
            y, _ = sf.read(same[(start + len(parts)) % len(same)], dtype="float32", always_2d=True)
            parts.append(y if y.shape[1] == 2 else np.repeat(y[:, :1], 2, axis=1))
            total += len(parts[-1])
        encode_mp3(folder / f"clip_{i:04d}.mp3", np.concatenate(parts)[: int(seconds * sr)], sr)
    return folder


def seed_loop(paths: list[str], k: int, musicnn: bool) -> None:
    """Seed 002's notebook, cell by cell, as one loop over the tracks (plus musicnn per track)."""
    import warnings

    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    from oracles.features_reference import timbre_from_path

    rows, embedder = [], None
    if musicnn:
        from soundclust_ray.audio import load_audio
        from soundclust_ray.config import AudioConfig, MusicnnConfig
        from soundclust_ray.embed.musicnn import MusicnnEmbedder

        embedder = MusicnnEmbedder(MusicnnConfig(), "cpu")
    for path in paths:
        row = list(timbre_from_path(path).values())
        if embedder is not None:
            y = load_audio(path, embedder.sample_rate, AudioConfig().max_duration_s)
            row += list(embedder.embed_tracks([embedder.prepare(y)])[0].embeddings.mean(axis=0))
        rows.append(row)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hdbscan
        import umap
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        X = StandardScaler().fit_transform(np.asarray(rows, dtype=np.float64))
        KMeans(n_clusters=k, n_init=10, random_state=42).fit_predict(X)
        hdbscan.HDBSCAN(min_cluster_size=4, min_samples=2).fit_predict(X)
        umap.UMAP(n_neighbors=10, min_dist=0.1, random_state=42).fit_transform(X)
        PCA(n_components=2, random_state=42).fit_transform(X)


def timed(cmd: list[str]) -> float:
    """Wall seconds of a command run to completion (its output discarded; failure raises)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed:\n{proc.stderr[-2000:]}")
    return seconds


def one_round(paths_file: str, manifest: str, mode: str, k: int) -> tuple[float, float]:
    """(seed loop seconds, ours seconds) for one mode, each in a fresh process."""
    seed_cmd = [sys.executable, __file__, "--worker", paths_file, str(k), mode]
    seed = timed(seed_cmd)
    out = tempfile.mkdtemp(prefix="bench_e2e_")
    try:
        ours_cmd = [str(SOUNDCLUST), "run", manifest, "--out", out, "--k", str(k), "--quiet"]
        ours_cmd += ["--allow-outside-root"]
        if mode == "timbre":
            ours_cmd += ["--features", "timbre", "--embed", "none"]
        ours = timed(ours_cmd)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return seed, ours


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=Path, default=MER4Q / "audio", help="folder of clips")
    p.add_argument("--mode", choices=["timbre", "default", "both"], default="timbre")
    p.add_argument("--limit", type=int, default=None, help="at most this many clips")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--k", type=int, default=7)
    p.add_argument("--clip-seconds", type=float, help="make clips this long from --clips first")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        paths_file, k, mode = a.worker
        paths = Path(paths_file).read_text().split("\n")
        seed_loop([q for q in paths if q], int(k), mode == "default")
        return
    if a.clip_seconds:
        a.clips = long_clips(a.clips, a.clip_seconds, a.limit or 300)
    paths = clip_paths(a.clips, a.limit)
    work = Path(tempfile.mkdtemp(prefix="bench_e2e_list_"))
    manifest = work / "clips.csv"  # the same files for both sides
    manifest.write_text("path\n" + "".join(f"{q}\n" for q in paths))
    (work / "paths.txt").write_text("\n".join(paths))
    modes = ["timbre", "default"] if a.mode == "both" else [a.mode]
    print(f"end to end on {len(paths)} clips from {a.clips}, k={a.k}, {os.cpu_count()} cores")
    try:
        for mode in modes:
            runs = []
            for r in range(a.rounds):
                seed, ours = one_round(str(work / "paths.txt"), str(manifest), mode, a.k)
                runs.append((seed, ours))
                print(f"  {mode} round {r + 1}: seed loop {seed:.1f} s, ours {ours:.1f} s")
            seed = statistics.median(s for s, _ in runs)
            ours = statistics.median(o for _, o in runs)
            print(f"{mode}: seed loop {seed:.1f} s, ours {ours:.1f} s = {seed / ours:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
