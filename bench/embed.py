"""musicnn embedding throughput: the batched stage vs a naive per-track loop, in one run.

Both sides embed the same real GTZAN clips (decoded at 16 kHz beforehand; decoding is the
prepare stage's work and is excluded from both) with the same shipped weights and torch
threads, and both end in one pooled 200-d vector + 50 tags per track:

- ``stage``: ``EmbedStage`` (the Ray Data callable, called directly) on Ray batches of
  ``RunConfig.batch_size`` tracks: one torch log-mel front end for all tracks of the batch on
  the model's device, patches of all tracks batched through the model, mean pooling;
- ``naive``: per track, librosa's numpy mel (musicnn's own pipeline), then the model on one
  187-frame patch at a time, then the mean.

Rounds alternate naive and stage so that load from other processes hits both alike; the
figures are medians over rounds. ``--device cuda`` runs both on the GPU where one exists.

    .venv/bin/python bench/embed.py [--quick] [--tracks 4] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from soundclust_ray.audio import load_audio  # noqa: E402
from soundclust_ray.config import EmbedConfig, RunConfig  # noqa: E402
from soundclust_ray.stages.base import ERROR_FIELDS  # noqa: E402
from soundclust_ray.stages.embed import PREPARED, EmbedStage  # noqa: E402

GTZAN = (
    Path(os.environ.get("SOUNDCLUST_SHARED_DATA", REPO.parent / "shared" / "data")) / "gtzan_mini"
)


def load_signals(n: int, seconds: float, sr: int) -> list[np.ndarray]:
    """``n`` real clips (first ``seconds`` each); seeded noise where the data folder is absent."""
    paths = sorted(GTZAN.glob("*.wav"))[:n]
    if len(paths) < n:
        rng = np.random.default_rng(0)
        return [0.1 * rng.standard_normal(int(seconds * sr)).astype(np.float32) for _ in range(n)]
    return [load_audio(p, sr, seconds) for p in paths]


def stage_batches(stage: EmbedStage, prepared: list[np.ndarray], per_batch: int) -> list[dict]:
    """Ray-style input batches of the embed stage (what EmbedPrepareStage emits)."""
    batches = []
    for start in range(0, len(prepared), per_batch):
        chunk = prepared[start : start + per_batch]
        column = np.empty(len(chunk), dtype=object)
        for i, p in enumerate(chunk):
            column[i] = p
        ids = np.array([f"t{start + i}" for i in range(len(chunk))], dtype=object)
        batch = {"track_id": ids, "path": ids, PREPARED: column}
        batch |= {f: np.array([""] * len(chunk), dtype=object) for f in ERROR_FIELDS}
        batches.append(batch)
    return batches


def run_stage(stage: EmbedStage, batches: list[dict]) -> np.ndarray:
    return np.concatenate([stage(b)["embedding"] for b in batches])


def run_naive(stage: EmbedStage, signals: list[np.ndarray]) -> np.ndarray:
    """musicnn's reference loop: librosa mel per track, one patch per forward pass."""
    import librosa

    emb = stage.embedder
    cfg = emb.cfg
    out = []
    with torch.inference_mode():
        for y in signals:
            y = emb.prepare(y)
            mel = librosa.feature.melspectrogram(
                y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                n_mels=cfg.n_mels,
            ).T  # fmt: skip
            logmel = np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)
            pens = []
            for start in range(0, logmel.shape[0] - cfg.patch_frames + 1, cfg.patch_frames):
                patch = torch.from_numpy(logmel[None, start : start + cfg.patch_frames])
                pens.append(emb.model(patch.to(emb.device))[0].cpu().numpy())
            out.append(np.concatenate(pens).mean(axis=0, keepdims=True))
    return np.concatenate(out)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, np.ndarray]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 tracks of 10 s, 1 round")
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per track")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="MSD_musicnn")
    args = parser.parse_args()
    if args.quick:
        args.tracks, args.seconds, args.rounds = 3, 10.0, 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")

    base = RunConfig()
    embed = EmbedConfig(
        backends=("musicnn",), musicnn=replace(base.embed.musicnn, model=args.model)
    )
    cfg = replace(base, embed=embed)
    stage = EmbedStage(cfg, "musicnn", args.device)
    signals = load_signals(args.tracks, args.seconds, cfg.embed.musicnn.sample_rate)
    prepared = [stage.embedder.prepare(y) for y in signals]
    batches = stage_batches(stage, prepared, cfg.batch_size)
    patches = sum(stage.embedder.frontend.n_frames(p.size) // 187 for p in prepared)
    print(
        f"musicnn {args.model} on {args.device} ({torch.get_num_threads()} torch threads): "
        f"{len(signals)} tracks × {args.seconds:g} s = {patches} patches; "
        f"stage: {cfg.batch_size} tracks per Ray batch, {cfg.embed.musicnn.batch_size} patches "
        f"per forward; naive: librosa mel per track, 1 patch per forward"
    )
    run_stage(stage, batches[:1])  # warm-up: allocator, oneDNN / cuDNN kernel choice
    run_naive(stage, signals[:1])
    naive_s, stage_s = [], []
    for r in range(args.rounds):
        t_naive, naive = timed(lambda: run_naive(stage, signals), args.device)
        t_stage, staged = timed(lambda: run_stage(stage, batches), args.device)
        naive_s.append(t_naive)
        stage_s.append(t_stage)
        print(
            f"round {r + 1}: naive {len(signals) / t_naive:6.2f} tracks/s, "
            f"stage {len(signals) / t_stage:6.2f} tracks/s"
        )
    diff = float(np.abs(naive - staged).max())
    naive_tps = len(signals) / float(np.median(naive_s))
    stage_tps = len(signals) / float(np.median(stage_s))
    print(f"naive loop : {naive_tps:7.2f} tracks/s ({naive_tps * args.seconds:7.1f}× real time)")
    print(f"stage      : {stage_tps:7.2f} tracks/s ({stage_tps * args.seconds:7.1f}× real time)")
    print(f"ratio stage/naive: {stage_tps / naive_tps:.2f}× (max |Δ embedding| {diff:.1e})")


if __name__ == "__main__":
    main()
