"""GPU checks in one command (``make bench-gpu``): embeddings on the GPU next to CPU features.

One table, each row a measured configuration on the same clips (real GTZAN where the data
folder exists, seeded noise otherwise), with rates in items/s and tracks/s of ``--seconds``
audio, the GPU busy fraction sampled with NVML while the row ran (``pynvml`` through
``torch.cuda.utilization``; "n/a" without it) and, for fp16 rows, the largest difference to
the fp32 embeddings of the same batch size:

- ``features``: the ``--features`` families on CPU, one process (what a feature worker does);
- ``musicnn cpu``: the musicnn stage's embedder on CPU (all torch threads of the host);
- ``musicnn``: ``MusicnnEmbedder.embed_tracks`` on the GPU (torch log-mel + model), fp32 and
  fp16 (autocast around the model only: the power mel overflows float16), at each patch
  batch size of ``--musicnn-batches``;
- ``clap``: ``ClapEmbedder.embed_tracks`` with random weights of the real larger_clap_music
  size (``bench/clap.py``), fp32 and fp16, at each window batch size of ``--clap-batches``.

Without a CUDA device it prints one line, "no CUDA device: skipped", and exits 0, so the
target is safe on any host; ``--device cpu`` runs every row on the CPU instead (a check of the
script: fp16 rows then equal fp32, there is no GPU busy fraction). Sized for well under 8
minutes on one GPU: the CLAP model is built once, every row is a warm-up plus ``--reps`` timed
calls (the best is kept).

    .venv/bin/python bench/gpu.py [--device cuda] [--tracks 64] [--reps 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from soundclust_ray.config import ClapEmbedConfig, FeaturesConfig, MusicnnConfig  # noqa: E402

SKIPPED = "no CUDA device: skipped"


def _bench_module(name: str):
    """A sibling bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Row:
    what: str
    device: str
    precision: str
    batch: int | str
    items: str
    per_s: float
    tracks_per_s: float
    busy: float | None = None
    diff: float | None = None

    def line(self) -> str:
        busy = "n/a" if self.busy is None else f"{self.busy:.0f} %"
        diff = "" if self.diff is None else f"{self.diff:.1e}"
        return (
            f"{self.what:<12} {self.device:<5} {self.precision:<5} {self.batch!s:>6} "
            f"{self.per_s:10.1f} {self.items:<8} {self.tracks_per_s:9.2f} {busy:>7} {diff:>9}"
        )


HEADER = (
    f"{'what':<12} {'dev':<5} {'prec':<5} {'batch':>6} {'rate':>10} {'per s':<8} "
    f"{'tracks/s':>9} {'GPU busy':>7} {'max|Δ|fp32':>9}"
)


def best_time(fn: Callable[[], object], device: str, reps: int) -> tuple[float, object]:
    """Best of ``reps`` timed calls after one warm-up (kernel choice, allocator)."""
    result = fn()
    best = float("inf")
    for _ in range(reps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def feature_row(paths: list[Path], names: tuple[str, ...], seconds: float) -> Row | None:
    """The feature families on CPU, decode included, one process; None without clips."""
    from soundclust_ray.audio import load_audio
    from soundclust_ray.features.registry import compute_family, decode_rates, get_families

    if not paths:
        return None
    cfg = FeaturesConfig()
    families = get_families(names)
    start = time.perf_counter()
    for path in paths:
        signals = {r: load_audio(path, r, seconds) for r in decode_rates(families, cfg)}
        for family in families:
            compute_family(family, signals, cfg)
    rate = len(paths) / (time.perf_counter() - start)
    return Row("features", "cpu", "fp64", 1, "tracks", rate, rate)


def precision_rows(what: str, batch: int, items: tuple[str, int], n_tracks: int, run, ctx):
    """fp32 then fp16 rows of one batch size; ``run(fp16)`` embeds every track once.

    ``items``: (unit, count) of the row's rate; ``ctx``: (args, GPU sampler class).
    """
    args, sampler = ctx
    rows, reference = [], None
    for precision in ("fp32", "fp16"):
        with sampler(args.device) as gpu:
            t, out = best_time(lambda fp16=precision == "fp16": run(fp16), args.device, args.reps)
        vectors = np.concatenate([o.embeddings for o in out])
        diff = None if reference is None else float(np.abs(vectors - reference).max())
        reference = vectors if reference is None else reference
        rate, per_track = items[1] / t, n_tracks / t
        rows.append(
            Row(what, args.device, precision, batch, items[0], rate, per_track, gpu.mean, diff)
        )
        print(rows[-1].line(), flush=True)
    return rows


def musicnn_rows(signals: list[np.ndarray], ctx) -> list[Row]:
    """musicnn on CPU (the stage's path) and on the device at each batch size, fp32 and fp16."""
    from soundclust_ray.embed.musicnn import MusicnnEmbedder

    args = ctx[0]
    cpu = MusicnnEmbedder(MusicnnConfig(), "cpu")
    prepared = [cpu.prepare(y) for y in signals]
    patches = sum(cpu.frontend.n_frames(p.size) // cpu.cfg.patch_frames for p in prepared)
    few = prepared[: max(1, len(prepared) // 4)]
    t, _ = best_time(lambda: cpu.embed_tracks(few), "cpu", 1)
    few_patches = patches * len(few) / len(prepared)
    batch = cpu.cfg.batch_size
    rows = [Row("musicnn", "cpu", "fp32", batch, "patches", few_patches / t, len(few) / t)]
    print(rows[-1].line(), flush=True)
    for batch in args.musicnn_batches:
        emb = MusicnnEmbedder(replace(MusicnnConfig(), batch_size=batch), args.device)
        run = _autocast_model(emb, prepared)
        rows += precision_rows("musicnn", batch, ("patches", patches), len(prepared), run, ctx)
    return rows


def _autocast_model(emb, prepared: list[np.ndarray]):
    """``run(fp16)``: ``emb.embed_tracks(prepared)``, the model (not the float32 log-mel: its
    power mel overflows float16) under float16 autocast when ``fp16``."""
    layers = emb.layers

    def run(fp16: bool) -> list:
        def autocast_layers(x: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.autocast("cuda", torch.float16, enabled=fp16):
                return {k: v.float() for k, v in layers(x).items()}

        emb.layers = autocast_layers
        try:
            return emb.embed_tracks(prepared)
        finally:
            emb.layers = layers

    return run


def clap_rows(signals_48k: list[np.ndarray], ctx) -> list[Row]:
    """CLAP (random weights, real size) at each window batch size, fp32 and fp16."""
    from soundclust_ray.embed.clap import ClapEmbedder

    args = ctx[0]
    model, extractor = _bench_module("clap").build_model(args.device)
    emb = ClapEmbedder(model, extractor, ClapEmbedConfig(), args.device)
    prepared = [emb.prepare(y) for y in signals_48k]
    windows = sum(p.shape[0] for p in prepared)

    def run(fp16: bool) -> list:
        emb.autocast = fp16
        return emb.embed_tracks(prepared)

    rows = []
    for batch in args.clap_batches:
        emb.batch_size = batch
        rows += precision_rows("clap", batch, ("windows", windows), len(prepared), run, ctx)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tracks", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per track")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--features", default="timbre", help="comma list of feature families")
    parser.add_argument("--musicnn-batches", default="32,128,512", help="patches per forward")
    parser.add_argument("--clap-batches", default="1,8,32,64", help="windows per forward")
    args = parser.parse_args(argv)
    args.musicnn_batches = [int(b) for b in args.musicnn_batches.split(",")]
    args.clap_batches = [int(b) for b in args.clap_batches.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(SKIPPED)
        return 0
    embed_bench = _bench_module("embed")
    ctx = (args, _bench_module("clap").GpuSampler)
    start = time.perf_counter()
    name = torch.cuda.get_device_name(args.device) if cuda else "CPU (a dry run of the table)"
    print(f"{name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    paths = sorted(embed_bench.GTZAN.glob("*.wav"))[: args.tracks]
    signals = embed_bench.load_signals(args.tracks, args.seconds, MusicnnConfig.sample_rate)
    signals_48k = embed_bench.load_signals(args.tracks, args.seconds, 48000)
    print(HEADER)
    rows = []
    features = feature_row(paths, tuple(args.features.split(",")), args.seconds)
    if features is not None:
        rows.append(features)
        print(features.line(), flush=True)
    rows += musicnn_rows(signals, ctx)
    rows += clap_rows(signals_48k, ctx)
    print(f"\nall rows ({time.perf_counter() - start:.0f} s):")
    print(HEADER)
    for row in rows:
        print(row.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
