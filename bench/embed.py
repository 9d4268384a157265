"""musicnn stage speed on CPU: today's stage vs the 2026-12-02 stage (its reference), one run.

Both sides embed the same real clips (GTZAN, decoded at 16 kHz beforehand: decoding is the
prepare stage's work) with the same shipped weights and torch threads, as ``EmbedStage``
called directly on Ray-style batches of ``EmbedConfig.batch_tracks`` tracks, each ending in one
pooled vector + 50 tag columns per track:

- ``stage``: the stage as it is (on CPU the musicnn front end as im2col matrix products,
  ``embed.musicnn.GemmMusicnn``);
- ``reference``: the stage as it was before issue 17, frozen here (:func:`_reference_embed_tracks`,
  the module's oneDNN convs via ``MusicnnModel.layers``, the same log-mel and patching).

Rounds alternate the order of the two sides so that load from other processes hits both
alike; figures are medians over rounds. Also printed: model FLOPs per track
(``torch.utils.flop_counter`` on one patch × patches per track), the rate of a 2048³ float32
matmul timed in the same rounds, the fraction of it each side reaches, and (``--profile``) the
stage's time per part: log-mel, patching, forward pass, pooling, Arrow conversion.
Torch threads default to what a CPU model actor gets (``embed_resources``: 1 on 2 cores).
``--device cuda`` runs both on the GPU (there the stage uses the module itself: ratio ≈ 1).

    .venv/bin/python bench/embed.py [--quick] [--tracks 8] [--rounds 5] [--profile]
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
from soundclust_ray.embed.base import WindowOutputs  # noqa: E402
from soundclust_ray.embed.musicnn import MusicnnEmbedder, ieee_fp32_convs  # noqa: E402
from soundclust_ray.stages.base import ERROR_FIELDS  # noqa: E402
from soundclust_ray.stages.embed import PREPARED, TAG_PREFIX, EmbedStage, embed_resources  # noqa: E402
from soundclust_ray.stages.writer import shard_table  # noqa: E402

GTZAN = (
    Path(os.environ.get("SOUNDCLUST_SHARED_DATA", REPO.parent / "shared" / "data")) / "gtzan_mini"
)
MATMUL_N = 2048


def load_signals(n: int, seconds: float, sr: int) -> list[np.ndarray]:
    """``n`` real clips (first ``seconds`` each), cycling the folder; seeded noise without it."""
    paths = sorted(GTZAN.glob("*.wav"))
    if not paths:
        rng = np.random.default_rng(0)
        return [0.1 * rng.standard_normal(int(seconds * sr)).astype(np.float32) for _ in range(n)]
    return [load_audio(paths[i % len(paths)], sr, seconds) for i in range(n)]


def stage_batches(prepared: list[np.ndarray], per_batch: int) -> list[dict]:
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


def _reference_patches(emb: MusicnnEmbedder, prepared: list[np.ndarray]) -> list[torch.Tensor]:
    """The stage's patching before issue 17: length groups through the torch log-mel, unfold."""
    from soundclust_ray.embed.musicnn import length_groups

    frames, sizes = emb.cfg.patch_frames, [p.size for p in prepared]
    per_track: list[torch.Tensor] = [torch.empty(0)] * len(prepared)
    for group in length_groups(sizes, emb.cfg.frontend_batch_samples):
        waves = np.zeros((len(group), sizes[group[-1]]), dtype=np.float32)
        for row, i in enumerate(group):
            waves[row, : sizes[i]] = prepared[i]
        logmel = emb.frontend(torch.from_numpy(waves).to(emb.device))
        for row, i in enumerate(group):
            track = logmel[row, : emb.frontend.n_frames(sizes[i])]
            per_track[i] = track.unfold(0, frames, emb.cfg.patch_hop).transpose(1, 2)
    return per_track


def _reference_embed_tracks(emb: MusicnnEmbedder, prepared: list[np.ndarray]) -> list:
    """``MusicnnEmbedder.embed_tracks`` before issue 17: the module's forward (oneDNN convs)."""
    if not prepared:
        return []
    with torch.inference_mode(), ieee_fp32_convs(emb.device):
        per_track = _reference_patches(emb, prepared)
        patches, counts = torch.cat(per_track), [t.shape[0] for t in per_track]
        pens, tags = [], []
        for start in range(0, patches.shape[0], emb.cfg.batch_size):
            out = emb.model.layers(patches[start : start + emb.cfg.batch_size])
            pens.append(out[emb.layer])
            tags.append(torch.sigmoid(out["logits"]))
        pen_all = torch.cat(pens).float().cpu().numpy()
        tag_all = torch.cat(tags).float().cpu().numpy()
    bounds = np.cumsum([0, *counts])
    return [
        WindowOutputs(embeddings=pen_all[a:b], tags=tag_all[a:b])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def reference_stage(cfg: RunConfig, device: str) -> EmbedStage:
    """An EmbedStage whose embedder runs the frozen pre-issue-17 code path."""
    stage = EmbedStage(cfg, "musicnn", device)
    emb = stage.embedder
    emb.embed_tracks = lambda prepared: _reference_embed_tracks(emb, prepared)
    emb.layers = emb.model.layers  # what --profile times as its forward pass
    return stage


def run_stage(stage: EmbedStage, batches: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, tags) of all tracks, one stage call per Ray batch."""
    outs = [stage(b) for b in batches]
    tags = [np.stack([o[c] for c in stage.tag_columns], axis=1) for o in outs]
    return np.concatenate([o["embedding"] for o in outs]), np.concatenate(tags)


def flops_per_patch(emb: MusicnnEmbedder) -> float:
    """Model FLOPs (2 × multiply-adds of convs and dense layers) of one 187-frame patch."""
    from torch.utils.flop_counter import FlopCounterMode

    patch = torch.zeros(1, emb.cfg.patch_frames, emb.cfg.n_mels, device=emb.device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        emb.model.layers(patch)
    return float(counter.get_total_flops())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def timed_cpu(fn, device: str):
    """(wall seconds, this process's CPU seconds, result): CPU time is what other jobs on a
    shared host disturb least (with one torch thread it is the compute time)."""
    cpu = time.process_time()
    wall, result = timed(fn, device)
    return wall, time.process_time() - cpu, result


def matmul_rate(device: str) -> float:
    """FLOP/s of one float32 MATMUL_N³ product on ``device`` (the CPU's dense rate)."""
    a = torch.randn(MATMUL_N, MATMUL_N, device=device)
    b = torch.randn(MATMUL_N, MATMUL_N, device=device)
    seconds, _ = timed(lambda: a @ b, device)
    return 2 * MATMUL_N**3 / seconds


def forward_all(emb: MusicnnEmbedder, patches: torch.Tensor) -> list[dict]:
    """The embedder's forward pass over all patches, in its model batches."""
    step = emb.cfg.batch_size
    return [emb.layers(patches[a : a + step]) for a in range(0, patches.shape[0], step)]


def profile_parts(stage: EmbedStage, batches: list[dict], device: str) -> dict[str, float]:
    """Seconds per track of each part of the stage on ``batches`` (one pass)."""
    emb = stage.embedder
    columns = ["track_id", "embedding", *stage.tag_columns]
    parts = dict.fromkeys(("log-mel", "patching", "forward", "pooling", "arrow"), 0.0)
    n = sum(len(b["track_id"]) for b in batches)
    with torch.inference_mode():
        for b in batches:
            prepared = list(b[PREPARED])
            waves = [torch.from_numpy(p).to(device)[None] for p in prepared]
            t, _ = timed(lambda waves=waves: [emb.frontend(w) for w in waves], device)
            parts["log-mel"] += t
            t_all, (patches, _) = timed(lambda prepared=prepared: emb.patches(prepared), device)
            parts["patching"] += max(0.0, t_all - t)
            parts["forward"] += timed(lambda p=patches: forward_all(emb, p), device)[0]
            results = emb.embed_tracks(prepared)
            t, _ = timed(lambda results=results: [stage._rows(r) for r in results], device)
            parts["pooling"] += t
            out = stage(b)
            t, _ = timed(lambda out=out: shard_table(out, columns, stage.WRITES), device)
            parts["arrow"] += t
    return {k: v / n for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 tracks of 10 s, 1 round")
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per track")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="MSD_musicnn")
    parser.add_argument("--profile", action="store_true", help="time the stage's parts")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: a CPU actor's CPUs)"
    )
    args = parser.parse_args()
    if args.quick:
        args.tracks, args.seconds, args.rounds = 4, 10.0, 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")

    base = RunConfig()
    embed = EmbedConfig(
        backends=("musicnn",), musicnn=replace(base.embed.musicnn, model=args.model)
    )
    cfg = replace(base, embed=embed)
    torch.set_num_threads(args.threads or int(embed_resources(cfg, "musicnn").num_cpus))
    stage = EmbedStage(cfg, "musicnn", args.device)
    reference = reference_stage(cfg, args.device)
    signals = load_signals(args.tracks, args.seconds, cfg.embed.musicnn.sample_rate)
    prepared = [stage.embedder.prepare(y) for y in signals]
    batches = stage_batches(prepared, cfg.embed.batch_tracks)
    frames = cfg.embed.musicnn.patch_frames
    patches = sum(stage.embedder.frontend.n_frames(p.size) // frames for p in prepared)
    flops = flops_per_patch(stage.embedder) * patches / len(signals)
    print(
        f"musicnn {args.model} on {args.device} ({torch.get_num_threads()} torch threads): "
        f"{len(signals)} tracks × {args.seconds:g} s = {patches} patches, "
        f"{cfg.embed.batch_tracks} tracks per Ray batch; {flops / 1e9:.2f} GFLOP per track"
    )
    run_stage(stage, batches[:1])  # warm-up: allocator, oneDNN / cuDNN kernel choice
    run_stage(reference, batches[:1])
    sides = {"reference": reference, "stage": stage}
    seconds: dict[str, list[float]] = {k: [] for k in ("reference", "stage", "matmul")}
    cpu_seconds: dict[str, list[float]] = {"reference": [], "stage": []}
    outputs = {}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            run = lambda s=sides[name]: run_stage(s, batches)  # noqa: E731
            wall, cpu, outputs[name] = timed_cpu(run, args.device)
            seconds[name].append(wall / len(signals))
            cpu_seconds[name].append(cpu / len(signals))
        seconds["matmul"].append(2 * MATMUL_N**3 / matmul_rate(args.device))
        print(
            f"round {r + 1}: reference {seconds['reference'][-1]:.3f} s/track "
            f"(CPU {cpu_seconds['reference'][-1]:.3f}), stage {seconds['stage'][-1]:.3f} "
            f"s/track (CPU {cpu_seconds['stage'][-1]:.3f})",
            flush=True,
        )
    med = {k: float(np.median(v)) for k, v in seconds.items()}
    med_cpu = {k: float(np.median(v)) for k, v in cpu_seconds.items()}
    rate = 2 * MATMUL_N**3 / med["matmul"]
    for name in sides:
        achieved = flops / med[name]
        print(
            f"{name:<9}: {med[name]:.3f} s/track wall, {med_cpu[name]:.3f} CPU "
            f"({args.seconds / med[name]:6.1f}x real time), "
            f"{achieved / 1e9:6.1f} GFLOP/s = {achieved / rate:.0%} of the matmul rate"
        )
    emb_diff = np.abs(outputs["stage"][0] - outputs["reference"][0]).max()
    tag_diff = np.abs(outputs["stage"][1] - outputs["reference"][1]).max()
    print(f"matmul {MATMUL_N}³ float32: {rate / 1e9:.1f} GFLOP/s (median of rounds)")
    print(
        f"ratio reference/stage: {med['reference'] / med['stage']:.2f}x faster per track "
        f"(CPU time {med_cpu['reference'] / med_cpu['stage']:.2f}x); "
        f"max |Δ embedding| {emb_diff:.1e}, max |Δ {TAG_PREFIX}*| {tag_diff:.1e}"
    )
    if args.profile:
        for name, side in sides.items():
            parts = profile_parts(side, batches, args.device)
            print(f"{name} parts, s/track: " + ", ".join(f"{k} {v:.4f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
