"""Reading audio from object storage: ranged block reads vs downloading each object whole.

Starts moto's S3-compatible server on 127.0.0.1, uploads long tracks (GTZAN clips tiled to
``--minutes``), and decodes the first ``--max-duration`` seconds of each through
``load_audio`` (ranged 4 MiB blocks, stops with the decoder) and through the naive reference
(GET the whole object into memory, then decode the same seconds). Prints time and bytes
fetched for both and their ratios; also a 30 s clip, where both fetch the whole object.

    .venv/bin/python bench/storage.py [--quick] [--tracks N] [--minutes M] [--max-duration S]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("SOUNDCLUST_SHARED_DATA", REPO.parent / "shared" / "data"))


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(300):
        try:
            opener.open(f"{endpoint}/moto-api/", timeout=2)
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto server did not start")


def naive_load(fs: pafs.FileSystem, key: str, max_s: float) -> np.ndarray:
    """The reference: download the whole object, then decode the first ``max_s`` seconds."""
    with fs.open_input_stream(key) as f:
        data = f.read()
    with sf.SoundFile(io.BytesIO(data)) as snd:
        return snd.read(frames=int(max_s * snd.samplerate), dtype="float32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 tracks of 5 minutes")
    ap.add_argument("--tracks", type=int, default=6)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--max-duration", type=float, default=30.0)
    args = ap.parse_args()
    if args.quick:
        args.tracks, args.minutes = 2, 5.0
    proc, endpoint = start_server()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    from soundclust_ray.audio.decode import read_audio
    from soundclust_ray.storage import RangeReader

    try:
        fs = pafs.S3FileSystem(
            endpoint_override=endpoint,
            access_key="bench",
            secret_key="bench",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir("bench")
        clips = sorted((DATA / "gtzan_mini").glob("*.wav"))[: args.tracks]
        keys = []
        for i, clip in enumerate(clips):
            y, sr = sf.read(clip, dtype="int16")
            long = np.tile(y, int(np.ceil(args.minutes * 60 * sr / len(y))))
            buf = io.BytesIO()
            sf.write(buf, long, sr, format="WAV", subtype="PCM_16")
            with fs.open_output_stream(f"bench/long/{i}.wav") as f:
                f.write(buf.getvalue())
            with fs.open_output_stream(f"bench/clip/{i}.wav") as f:
                f.write(clip.read_bytes())
            keys.append(i)
        print(
            f"{len(keys)} tracks of {args.minutes:g} min (22.05 kHz 16-bit WAV), "
            f"decoding the first {args.max_duration:g} s; S3 server {endpoint}"
        )
        naive_load(fs, "bench/clip/0.wav", 1.0)  # warm both clients before timing
        read_audio("s3://bench/clip/0.wav", 1.0)
        for kind in ("long", "clip"):
            sizes = [fs.get_file_info(f"bench/{kind}/{i}.wav").size for i in keys]
            t0 = time.perf_counter()
            for i in keys:
                ref = naive_load(fs, f"bench/{kind}/{i}.wav", args.max_duration)
            naive_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in keys:
                y, _ = read_audio(f"s3://bench/{kind}/{i}.wav", args.max_duration)
            ours_s = time.perf_counter() - t0
            assert np.array_equal(y, ref.astype(np.float32))
            fetched = 0
            for i in keys:
                with RangeReader(f"s3://bench/{kind}/{i}.wav") as r, sf.SoundFile(r) as snd:
                    snd.read(frames=int(args.max_duration * snd.samplerate))
                    fetched += r.bytes_fetched
            total = sum(sizes)
            print(
                f"  {kind:<5} naive whole-object GET: {naive_s:6.2f} s {total / 2**20:7.1f} MiB"
                f" | ranged blocks: {ours_s:6.2f} s {fetched / 2**20:7.1f} MiB"
                f" | time ratio {naive_s / ours_s:5.2f}x  bytes ratio {total / fetched:5.2f}x"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
