"""CLAP embedding throughput: the batched stage vs a naive per-window loop, in one run.

Random weights in the real ``laion/larger_clap_music`` architecture (HTSAT audio encoder with
depths 2-2-12-2, patch embeddings 128, hidden 1024, window 8, 256×256 spectrogram image; 512-d
projection; the feature extractor of LAION's larger CLAP checkpoints: 48 kHz, 10 s, 64 Slaney
mels 50 Hz–14 kHz, rand_trunc + repeatpad), so timings equal the real model's without network.

Measured, in windows (10 s of 48 kHz audio) per second:
- ``prepare``: CPU decode (real GTZAN clips, resampled to 48 kHz) + windowing, one process;
- ``frontend``: log-mel, batched torch on the model's device vs the HF extractor per window;
- ``stage``: ``ClapEmbedder.embed_tracks`` (front end + model) at each batch size;
- ``model``: the model alone on ready features at each batch size;
- ``naive``: per window, HF numpy extractor then ``get_audio_features`` on one window.
fp16 (autocast) rows run only on CUDA; on CUDA the GPU utilisation during the stage is sampled.
Also printed: the audio tower's FLOPs per window (``torch.utils.flop_counter``) and the fraction
of a float32 matmul's rate on the same device that the best stage row reaches.
GPU figures need a GPU host; on CPU the default batch sizes are small to stay under ~3 minutes.

    .venv/bin/python bench/clap.py [--quick] [--batch-sizes 1,2,4,8,16,32,64] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from soundclust_ray.audio import load_audio  # noqa: E402
from soundclust_ray.config import ClapEmbedConfig  # noqa: E402
from soundclust_ray.embed.clap import ClapEmbedder  # noqa: E402

GTZAN = (
    Path(os.environ.get("SOUNDCLUST_SHARED_DATA", REPO.parent / "shared" / "data")) / "gtzan_mini"
)

LARGER_CLAP_MUSIC_AUDIO = {
    "depths": [2, 2, 12, 2],
    "hidden_size": 1024,
    "patch_embeds_hidden_size": 128,
}
"""audio_config of laion/larger_clap_music's config.json; the rest are ClapAudioConfig defaults."""


def build_model(device: str):
    """Random-weight ClapModel of larger_clap_music's size + its extractor; text tower dropped."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(0)
    config = ClapConfig(audio_config=LARGER_CLAP_MUSIC_AUDIO, text_config={}, projection_dim=512)
    model = ClapModel(config).eval()
    model.text_model = None
    model.text_projection = None
    extractor = ClapFeatureExtractor(frequency_min=50, truncation="rand_trunc", padding="repeatpad")
    return model.to(device), extractor


def load_signals(n_windows: int, sr: int) -> tuple[list[np.ndarray], float]:
    """Decode real clips at 48 kHz until there are enough 10 s windows; returns seconds spent."""
    paths = sorted(GTZAN.glob("*.wav"))
    signals, start = [], time.perf_counter()
    if not paths:
        rng = np.random.default_rng(0)
        signals = [
            0.1 * rng.standard_normal(30 * sr).astype(np.float32) for _ in range(n_windows // 3 + 1)
        ]
        return signals, time.perf_counter() - start
    for path in paths[: n_windows // 3 + 1]:
        signals.append(load_audio(path, sr))
    return signals, time.perf_counter() - start


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class GpuSampler:
    """Samples ``torch.cuda.utilization()`` (NVML) in a thread while a block runs."""

    def __init__(self, device: str, every_s: float = 0.05):
        self.device, self.every_s, self.samples = device, every_s, []
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # noqa: BLE001 - NVML missing: report no utilisation
                return
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self.device.startswith("cuda"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def timed(fn, device: str, reps: int, warm: bool = True) -> float:
    """Best of ``reps`` timed calls, after one warm-up call (kernels, allocator, oneDNN plans)."""
    if warm:
        fn()
        sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def flops_per_window(model, features: torch.Tensor, device: str) -> float:
    """FLOPs of the audio tower on one window (``torch.utils.flop_counter``: matmuls, convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    longer = torch.zeros((1, 1), dtype=torch.bool, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.get_audio_features(input_features=features[:1], is_longer=longer)
    return float(counter.get_total_flops())


def matmul_rate(device: str, n: int = 2048) -> float:
    """FLOP/s of one float32 n³ matmul on ``device``, best of 3 (the dense rate to compare)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / timed(lambda: a @ b, device, 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="batch sizes 1 and 2, one naive window"
    )
    parser.add_argument("--batch-sizes", help="comma list (default 1..64 on CUDA, 1,4 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=None, help="timed repeats per row")
    args = parser.parse_args(argv)
    device = args.device
    cuda = device.startswith("cuda")
    if args.batch_sizes:
        sizes = [int(s) for s in args.batch_sizes.split(",")]
    elif args.quick:
        sizes = [1, 2]
    else:
        sizes = [1, 2, 4, 8, 16, 32, 64] if cuda else [1, 4]
    reps = args.reps or (3 if cuda else 1)
    naive_windows = 1 if args.quick else (8 if cuda else 2)

    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    model, extractor = build_model(device)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model: larger_clap_music audio size, {n_params:.1f} M parameters (random weights)")

    cfg = ClapEmbedConfig()
    embedder = ClapEmbedder(model, extractor, cfg, device)
    signals, decode_s = load_signals(max(sizes), embedder.sample_rate)
    start = time.perf_counter()
    prepared = [embedder.prepare(y) for y in signals]
    window_s = time.perf_counter() - start
    windows = np.concatenate(prepared)
    n = windows.shape[0]
    print(
        f"prepare (CPU, 1 process): {n / (decode_s + window_s):8.1f} windows/s "
        f"(decode {decode_s:.2f} s + windowing {window_s:.3f} s for {n} windows)"
    )

    fe_batch = min(8, n)
    x = torch.from_numpy(windows[:fe_batch]).to(device)
    with torch.inference_mode():
        t_torch = timed(lambda: embedder.features(x), device, reps)
    start = time.perf_counter()
    for w in windows[:fe_batch]:
        extractor(w, sampling_rate=embedder.sample_rate, return_tensors="np")
    t_numpy = time.perf_counter() - start
    print(
        f"frontend: torch batched {fe_batch / t_torch:8.1f} windows/s, HF numpy per window "
        f"{fe_batch / t_numpy:6.1f} windows/s  → {t_numpy / t_torch:.1f}x"
    )

    model_in = embedder.features(x[:1])
    rows = []
    precisions = [False, True] if cuda else [False]
    for fp16 in precisions:
        embedder.autocast = fp16
        for b in sizes:
            batch = windows[np.arange(b) % n]
            embedder.batch_size = b
            with GpuSampler(device) as gpu:
                t_stage = timed(lambda batch=batch: embedder.embed_tracks([batch]), device, reps)
            feats = model_in.expand(b, -1, -1, -1).contiguous()
            longer = torch.zeros((b, 1), dtype=torch.bool, device=device)

            def model_only(feats=feats, longer=longer, fp16=fp16):
                with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=fp16):
                    model.get_audio_features(input_features=feats, is_longer=longer)

            t_model = timed(model_only, device, reps, warm=cuda)
            rows.append(("fp16" if fp16 else "fp32", b, b / t_stage, b / t_model, gpu.mean))
            util = f"  gpu {gpu.mean:5.1f} %" if gpu.mean is not None else ""
            print(
                f"{rows[-1][0]} batch {b:3d}: stage {b / t_stage:8.2f} windows/s, "
                f"model only {b / t_model:8.2f} windows/s{util}",
                flush=True,
            )

    embedder.autocast = False
    start = time.perf_counter()
    with torch.inference_mode():
        for w in windows[:naive_windows]:
            inputs = extractor(w, sampling_rate=embedder.sample_rate, return_tensors="pt").to(
                device
            )
            model.get_audio_features(**inputs).pooler_output.cpu()
    naive = naive_windows / (time.perf_counter() - start)
    best = max(rows, key=lambda r: r[2])
    print(f"naive per-window loop (HF numpy extractor + batch 1, fp32): {naive:8.2f} windows/s")
    print(
        f"best stage: {best[0]} batch {best[1]}: {best[2]:.2f} windows/s = "
        f"{best[2] / naive:.2f}x the naive loop"
    )
    flops = flops_per_window(model, model_in, device)
    rate = matmul_rate(device)
    achieved = best[2] * flops
    print(
        f"model: {flops / 1e9:.1f} GFLOP per window; best stage {achieved / 1e9:.1f} GFLOP/s = "
        f"{achieved / rate:.0%} of a 2048³ float32 matmul ({rate / 1e9:.1f} GFLOP/s)"
    )
    prep_rate = n / (decode_s + window_s)
    serial = 1.0 / (1.0 / prep_rate + 1.0 / best[2])
    print(
        f"decode + prepare + stage in one process (no overlap): {serial:.2f} windows/s; the "
        f"pipeline overlaps them, and one decode CPU feeds {prep_rate / best[2]:.0f}x the stage"
    )


if __name__ == "__main__":
    main()
