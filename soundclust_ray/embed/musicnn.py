"""musicnn (Pons & Serra 2019) pretrained music taggers, ported from TensorFlow 1 to PyTorch.

The wheel of ``musicnn`` 0.1.0 (ISC) ships TF checkpoints; ``convert_musicnn.py`` turns the
two musicnn models into the safetensors files in ``weights/`` so a run needs neither
TensorFlow nor a network. Layer by layer the graph follows ``shared/notes/musicnn.md``:
log-mel patches of 187 frames → a musically motivated front end (timbral + temporal convs,
max over mel) → dense 1-D conv mid-end → max/mean pooling over time → 200-d penultimate
→ 50 sigmoid tags. Every batch-norm is applied after its ReLU, with epsilon 1e-3, as in TF.
The vgg pair (``VggModel``) takes the same patches through 5 conv/BN/max-pool blocks.

For benchmarks, the one pure function to call is :func:`extract_layers`: for a mono waveform,
``extract_layers(y, sr, "MSD_vgg", layers=["pool3", "pool5", "logits"], pools=["mean",
"mean_std"])`` returns every "<layer>.<pool>" track summary of one forward pass (layers:
``MUSICNN_LAYERS`` / ``VGG_LAYERS``; pools: ``pooling.POOLS``; optional ``patch_hop`` < 187
overlaps patches).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from soundclust_ray.config import EmbedConfig, MusicnnConfig
from soundclust_ray.embed.base import EmbedderLoadError, WindowOutputs
from soundclust_ray.embed.pooling import POOLS, pool_rows

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MUSICNN_MODELS = ("MSD_musicnn", "MTT_musicnn")
"""Same musicnn graph, trained on Million Song Dataset / MagnaTagATune tags."""
VGG_MODELS = ("MSD_vgg", "MTT_vgg")
"""The wheel's VGG baseline (5 conv blocks of 128 filters), same training data and input."""
MODEL_NAMES = MUSICNN_MODELS + VGG_MODELS
MUSICNN_LAYERS = ("penultimate", "max_pool", "mean_pool", "logits")
VGG_LAYERS = ("pool1", "pool2", "pool3", "pool4", "pool5", "logits")
VGG_FILTERS = 128
VGG_POOLS = ((4, 1), (2, 2), (2, 2), (2, 2), (4, 4))
VGG_STRIDES = ((2, 2), (2, 2), (2, 2), (2, 2), (4, 4))
"""max_pooling2d sizes and strides after each VGG conv block (valid padding), (time, mel)."""
VGG_FLAT = 2 * 1 * VGG_FILTERS
"""pool5 of a 187×96 patch is 2 × 1 × 128, flattened time-major (NHWC) into the dense layer."""
METADATA_KEY = "musicnn"
"""safetensors metadata key holding a JSON object: model, source, wheel_sha256, license, tags."""
PATCH_FRAMES = MusicnnConfig.patch_frames
BN_EPS = 1e-3
"""TF1 ``layers.batch_normalization`` default epsilon."""
N_MELS = 96
TIMBRAL_WIDTHS = (38, 67)
"""Mel extents of the two timbral filters: int(0.4·96) and int(0.7·96)."""
TEMPORAL_LENGTHS = (128, 64, 32)
"""Time extents of the three temporal filters (frames)."""
FRONT_TIMBRAL, FRONT_TEMPORAL, MID_CHANNELS, DENSE_UNITS = 204, 51, 64, 200
FRONT_CHANNELS = 2 * FRONT_TIMBRAL + 3 * FRONT_TEMPORAL
FEATURE_CHANNELS = FRONT_CHANNELS + 3 * MID_CHANNELS


class FrozenBatchNorm(nn.Module):
    """Inference-only batch norm over dim 1 with TF's epsilon; buffers named like torch's BN."""

    def __init__(self, channels: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine map it applies: x · scale + shift, per channel."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.view(shape) + shift.view(shape)


def conv_relu_bn_max(x: torch.Tensor, conv: nn.Conv2d, bn: FrozenBatchNorm) -> torch.Tensor:
    """max over the last (mel) axis of bn(relu(conv(x))), without materializing bn(relu(·)).

    BN is a per-channel affine map with scale s. Since relu and x ↦ s·x + b are monotonic, the
    maximum is s·relu(max conv) + b where s > 0 and s·relu(min conv) + b where s < 0; flipping
    the sign of the conv weights of the s < 0 channels turns that min into a max. The
    (batch, channels, time, mel) conv output is then read once instead of three times.
    """
    scale, shift = bn.scale_shift()
    sign = torch.where(scale < 0, -1.0, 1.0).to(scale.dtype)
    extreme = F.conv2d(x, conv.weight * sign.view(-1, 1, 1, 1), conv.bias * sign).amax(dim=3)
    sign, scale, shift = (v.view(1, -1, 1) for v in (sign, scale, shift))
    return F.relu(extreme * sign) * scale + shift


class MusicnnModel(nn.Module):
    """The musicnn graph; input (batch, frames, 96) log-mel, frames = 187 for the taggers."""

    def __init__(self, n_tags: int = 50) -> None:
        super().__init__()
        self.input_bn = FrozenBatchNorm(1)
        self.timbral = nn.ModuleList(nn.Conv2d(1, FRONT_TIMBRAL, (7, w)) for w in TIMBRAL_WIDTHS)
        self.timbral_bn = nn.ModuleList(FrozenBatchNorm(FRONT_TIMBRAL) for _ in TIMBRAL_WIDTHS)
        self.temporal = nn.ModuleList(
            nn.Conv2d(1, FRONT_TEMPORAL, (k, 1)) for k in TEMPORAL_LENGTHS
        )
        self.temporal_bn = nn.ModuleList(FrozenBatchNorm(FRONT_TEMPORAL) for _ in TEMPORAL_LENGTHS)
        self.mid = nn.ModuleList(
            nn.Conv1d(c, MID_CHANNELS, 7, padding=3) for c in (FRONT_CHANNELS, 64, 64)
        )
        self.mid_bn = nn.ModuleList(FrozenBatchNorm(MID_CHANNELS) for _ in range(3))
        self.pool_bn = FrozenBatchNorm(2 * FEATURE_CHANNELS)
        self.dense = nn.Linear(2 * FEATURE_CHANNELS, DENSE_UNITS)
        self.dense_bn = FrozenBatchNorm(DENSE_UNITS)
        self.classifier = nn.Linear(DENSE_UNITS, n_tags)

    layer_names = MUSICNN_LAYERS
    default_layer = "penultimate"

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate (batch, 200), tag probabilities (batch, n_tags))."""
        out = self.layers(logmel)
        return out["penultimate"], torch.sigmoid(out["logits"])

    def layers(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every exposed layer of one forward pass, each (batch, dim): see ``MUSICNN_LAYERS``."""
        return self.back(self.front(self.input_bn(logmel.unsqueeze(1))))

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, mel) normalized input, NCHW with H = time → (B, 561, T) front-end features."""
        padded = F.pad(x, (0, 0, 3, 3))
        front = [
            conv_relu_bn_max(padded, conv, bn)
            for conv, bn in zip(self.timbral, self.timbral_bn, strict=True)
        ]
        for conv, bn, k in zip(self.temporal, self.temporal_bn, TEMPORAL_LENGTHS, strict=True):
            same = F.pad(x, (0, 0, *same_padding(k)))
            front.append(conv_relu_bn_max(same, conv, bn))
        return torch.cat(front, dim=1)

    def front_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per front channel (561), the batch-norm (scale, shift) after the ReLU."""
        pairs = [bn.scale_shift() for bn in (*self.timbral_bn, *self.temporal_bn)]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    def back(self, front: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 561, T) front features → the mid-end, pooling and dense layers' outputs."""
        feats = [front]
        h = front
        for i, (conv, bn) in enumerate(zip(self.mid, self.mid_bn, strict=True)):
            out = bn(F.relu(conv(h)))
            h = out if i == 0 else out + h
            feats.append(h)
        z = torch.cat(feats, dim=1)  # (B, 753, T)
        # TF stacks [max, mean] on a last axis and flattens: channels interleave max/mean.
        max_pool, mean_pool = z.amax(dim=2), z.mean(dim=2)
        pooled = torch.stack((max_pool, mean_pool), dim=2).flatten(1)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return {
            "penultimate": penultimate,
            "max_pool": max_pool,
            "mean_pool": mean_pool,
            "logits": self.classifier(penultimate),
        }


def same_padding(k: int) -> tuple[int, int]:
    """TF 'same' padding of a length-k kernel: the odd extra frame of an even k goes after."""
    return (k - 1) // 2, k - 1 - (k - 1) // 2


@dataclass(frozen=True)
class GemmConv:
    """Single-input-channel convs + max over mel, as kernel matrices times copied windows."""

    kernels: tuple[tuple[int, torch.Tensor], ...]
    """(first window element, kernel matrix) pairs; each reads K consecutive elements of the
    kt · kw window, its C outputs follow the previous pair's. The matrix is (C, K) where
    windows are columns (kw = 1), else (K, C): MKL runs a transposed operand up to 1.8x
    slower (measured). BN signs folded in."""
    bias: torch.Tensor
    kt: int
    kw: int
    pad: tuple[int, int]
    """Zero frames before and after the patch (time)."""
    channels: slice
    """Where the outputs go among the front's 561 channels."""

    def max_into(self, x: torch.Tensor, out: torch.Tensor, rows: int) -> None:
        """out (T, C) ← max over mel of the convs of one padded patch ``x`` (T + kt − 1, mel).

        About ``rows`` windows (frames × mel positions) at a time, so the copy, the products
        and their max stay in cache. Windows are rows of a (windows, K) matrix, or columns of
        a (K, windows) one where all mel positions are windows (kw = 1): (C, K) × (K, many)
        is faster when C is small, and a max over 96 contiguous values is (measured).
        """
        n_mel = x.shape[1]
        width = n_mel - self.kw + 1
        step = max(1, rows // width)
        columns = width == n_mel
        shape = (self.kt * self.kw, step * width) if columns else (step * width, self.kt * self.kw)
        windows = torch.empty(shape)
        for t0 in range(0, out.shape[0], step):
            n = min(step, out.shape[0] - t0)
            if columns:
                a = windows[:, : n * width]
                view = x[t0:].as_strided((self.kt, self.kw, n, width), (n_mel, 1, n_mel, 1))
                a.view(self.kt, self.kw, n, width).copy_(view)
            else:
                a = windows[: n * width]
                view = x[t0:].as_strided((n, width, self.kt, self.kw), (n_mel, 1, n_mel, 1))
                a.view(n, width, self.kt, self.kw).copy_(view)
            c0 = 0
            for first, w in self.kernels:
                c, k = w.shape if columns else w.shape[::-1]
                target = out[t0 : t0 + n, c0 : c0 + c]
                if columns:
                    y = torch.mm(w, a[first : first + k]).view(c, n, width)
                    torch.amax(y, dim=2, out=target.t())
                else:
                    y = torch.mm(a[:, first : first + k], w).view(n, width, c)
                    torch.amax(y, dim=1, out=target)
                c0 += c
        out += self.bias  # constant over mel: added after the max, to C values per frame


class GemmMusicnn:
    """:meth:`MusicnnModel.layers` for CPUs, with the front end's convs as large matrix products.

    oneDNN runs the front end's convs (one input channel, kernels up to 7 × 67 or 128 × 1)
    at about a third of the CPU's matmul rate, and they are ~95 % of the model's FLOPs. Here
    each is a product of copied windows with the kernel matrix, ``rows`` windows at a time,
    then the max over mel while the product is in cache (:meth:`GemmConv.max_into`). The
    three temporal kernels nest in the 128-frame window of the longest one: one copy serves
    all three, the 64 and 32 frame kernels share one product over the window's middle 64
    frames. The sign trick of :func:`conv_relu_bn_max` is folded into the kernels once. The
    mid-end and back-end are the module's own (``back``). Sums run in another order than
    oneDNN's: outputs agree to float32 rounding (tests/test_musicnn.py). Measured in
    bench/embed.py: ≈ 2.2x the module's forward on one thread.
    """

    def __init__(self, model: MusicnnModel, rows: int) -> None:
        self.model, self.rows = model, rows
        with torch.no_grad():
            self.scale, self.shift = model.front_affine()
            self.sign = torch.where(self.scale < 0, -1.0, 1.0).to(self.scale.dtype)
            timbral = [self._timbral(i) for i in range(len(TIMBRAL_WIDTHS))]
            self.convs = [*timbral, self._temporal()]

    def _timbral(self, i: int) -> GemmConv:
        conv, start = self.model.timbral[i], i * FRONT_TIMBRAL
        sign = self.sign[start : start + FRONT_TIMBRAL]
        kt, kw = conv.weight.shape[2:]
        weight = (conv.weight * sign.view(-1, 1, 1, 1)).reshape(FRONT_TIMBRAL, kt * kw)
        channels = slice(start, start + FRONT_TIMBRAL)
        kernels = ((0, weight.t().contiguous()),)
        return GemmConv(kernels, conv.bias * sign, kt, kw, same_padding(kt), channels)

    def _temporal(self) -> GemmConv:
        """The 128-frame kernel alone, the 64 and 32 frame ones zero-padded to 64 frames."""
        longest, shorter = TEMPORAL_LENGTHS[0], TEMPORAL_LENGTHS[1]
        start = len(TIMBRAL_WIDTHS) * FRONT_TIMBRAL
        sign = self.sign[start:].view(len(TEMPORAL_LENGTHS), FRONT_TEMPORAL, 1)
        taps = [c.weight[:, 0, :, 0] * s for c, s in zip(self.model.temporal, sign, strict=True)]
        first = same_padding(longest)[0] - same_padding(shorter)[0]
        short = torch.zeros((len(TEMPORAL_LENGTHS) - 1) * FRONT_TEMPORAL, shorter)
        for j, (w, k) in enumerate(zip(taps[1:], TEMPORAL_LENGTHS[1:], strict=True)):
            offset = same_padding(shorter)[0] - same_padding(k)[0]
            short[j * FRONT_TEMPORAL : (j + 1) * FRONT_TEMPORAL, offset : offset + k] = w
        kernels = ((0, taps[0].contiguous()), (first, short))
        bias = torch.cat([c.bias for c in self.model.temporal]) * self.sign[start:]
        pad = same_padding(longest)
        return GemmConv(kernels, bias, longest, 1, pad, slice(start, None))

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, mel) normalized input → (B, 561, T), as :meth:`MusicnnModel.front`.

        With several torch threads, patches go to that many Python threads that each run
        single-threaded matrix products: the products are ~1 ms, too short for a parallel
        region each (2 threads beside another job: 0.2-0.7x the module, measured 2026-12-02).
        """
        extreme = torch.empty(x.shape[0], x.shape[1], FRONT_CHANNELS)
        padded = [F.pad(x, (0, 0, *conv.pad)) for conv in self.convs]

        def one_patch(i: int) -> None:
            for conv, p in zip(self.convs, padded, strict=True):
                conv.max_into(p[i], extreme[i, :, conv.channels], self.rows)

        threads = torch.get_num_threads()
        if threads == 1 or x.shape[0] == 1:
            for i in range(x.shape[0]):
                one_patch(i)
        else:
            try:
                inference = torch.is_inference_mode_enabled()
                with ThreadPoolExecutor(min(threads, x.shape[0])) as pool:
                    run = partial(_single_threaded, one_patch, inference)
                    list(pool.map(run, range(x.shape[0])))
            finally:
                torch.set_num_threads(threads)  # MKL's count is process-wide
        front = F.relu(extreme.mul_(self.sign)).mul_(self.scale).add_(self.shift)
        return front.transpose(1, 2).contiguous()

    def layers(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every exposed layer, as :meth:`MusicnnModel.layers` computes them."""
        return self.model.back(self.front(self.model.input_bn(logmel.unsqueeze(1))[:, 0]))


def _single_threaded(fn: Callable[[int], None], inference: bool, i: int) -> None:
    """``fn(i)`` with this thread's torch (OpenMP, MKL) threads at 1, in the caller's
    inference mode (thread-local)."""
    torch.set_num_threads(1)
    with torch.inference_mode(inference):
        fn(i)


def layers_function(
    model: MusicnnModel | VggModel, device: torch.device, rows: int
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """What the embedder runs: musicnn on CPU through :class:`GemmMusicnn`, else the module
    (cuDNN's convs are fast on a GPU; the vgg convs have 128 input channels, oneDNN's forte)."""
    if device.type == "cpu" and isinstance(model, MusicnnModel):
        return GemmMusicnn(model, rows).layers
    return model.layers


class VggModel(nn.Module):
    """The wheel's ``vgg`` graph: 5 × (3×3 'same' conv → ReLU → BN → max-pool), dense → tags.

    Input (batch, 187, 96) log-mel like musicnn's. ``pool1`` … ``pool5`` are each block's
    pooled map averaged over time and mel (128-d); the extractor returns the raw maps.
    """

    layer_names = VGG_LAYERS
    default_layer = "pool5"

    def __init__(self, n_tags: int = 50) -> None:
        super().__init__()
        self.input_bn = FrozenBatchNorm(1)
        self.convs = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else VGG_FILTERS, VGG_FILTERS, 3, padding=1) for i in range(5)
        )
        self.conv_bn = nn.ModuleList(FrozenBatchNorm(VGG_FILTERS) for _ in range(5))
        self.classifier = nn.Linear(VGG_FLAT, n_tags)

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool5 (batch, 128), tag probabilities (batch, n_tags))."""
        out = self.layers(logmel)
        return out["pool5"], torch.sigmoid(out["logits"])

    def layers(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every exposed layer of one forward pass, each (batch, dim): see ``VGG_LAYERS``."""
        x = self.input_bn(logmel.unsqueeze(1))  # (B, 1, T, mel), NCHW with H = time
        out: dict[str, torch.Tensor] = {}
        blocks = zip(self.convs, self.conv_bn, VGG_POOLS, VGG_STRIDES, strict=True)
        for i, (conv, bn, size, stride) in enumerate(blocks):
            x = F.max_pool2d(bn(F.relu(conv(x))), size, stride)
            out[f"pool{i + 1}"] = x.mean(dim=(2, 3))
        out["logits"] = self.classifier(x.permute(0, 2, 3, 1).flatten(1))
        return out


class LogMelFrontEnd(nn.Module):
    """musicnn's input, batched in torch: librosa's default power mel, float16 round trip, log.

    Matches ``librosa.feature.melspectrogram`` (Hann, center=True with zero padding, Slaney
    mel scale and norm); the float16 cast reproduces the training data's storage precision,
    and ``log10(10000·x + 1)`` runs in float32 (the package's float16 arithmetic overflows).
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> None:
        super().__init__()
        import librosa

        self.n_fft, self.hop_length = n_fft, hop_length
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
        self.register_buffer("mel_basis", torch.from_numpy(mel.astype(np.float32)))
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT, as librosa counts them."""
        return 1 + n_samples // self.hop_length

    def power_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """(batch, samples) → (batch, frames, n_mels) power mel; zero right-padding is harmless."""
        spec = torch.stft(
            waves,
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        return torch.matmul(self.mel_basis, power).transpose(1, 2)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """(batch, samples) → (batch, frames, n_mels) log-compressed mel, the model's input."""
        return torch.log10(10000 * self.power_mel(waves).half().float() + 1)


def sanitize_tag(name: str) -> str:
    """A tag as a column-name suffix: lower case, runs of anything but [a-z0-9] → '_'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def weights_path(model: str) -> Path:
    """The safetensors file of a shipped model name, or ``model`` itself if it is a file.

    Raises:
        EmbedderLoadError: neither a shipped model name nor an existing file.
    """
    if model in MODEL_NAMES:
        path = WEIGHTS_DIR / f"{model}.safetensors"
        if not path.is_file():
            raise EmbedderLoadError(
                f"musicnn weights missing at {path}; rebuild them with "
                "`python -m soundclust_ray.embed.convert_musicnn`"
            )
        return path
    path = Path(model)
    if path.suffix == ".safetensors" and path.is_file():
        return path
    raise EmbedderLoadError(
        f"unknown musicnn model {model!r}; use one of {', '.join(MODEL_NAMES)} "
        "or a .safetensors file made by soundclust_ray.embed.convert_musicnn"
    )


def load_model(
    model: str, device: str | torch.device = "cpu"
) -> tuple[MusicnnModel | VggModel, list[str]]:
    """The model in eval mode on ``device`` and its tag labels (as the authors wrote them)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = weights_path(model)
    with safe_open(str(path), framework="pt") as f:
        info = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
    labels = info.get("tags", [])
    if not labels:
        raise EmbedderLoadError(f"{path} is not a musicnn weights file: no '{METADATA_KEY}' tags")
    state = load_file(str(path))
    graph = VggModel if "convs.0.weight" in state else MusicnnModel
    net = graph(n_tags=len(labels))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EmbedderLoadError(f"{path} is not a musicnn weights file: {exc}") from exc
    return net.eval().to(device), labels


@contextmanager
def ieee_fp32_convs(device: torch.device) -> Iterator[None]:
    """cuDNN convs in full float32 (no TF32) while inside, so GPU outputs match CPU and TF."""
    if device.type != "cuda":
        yield
        return
    conv = torch.backends.cudnn.conv
    previous = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = previous


def length_groups(sizes: list[int], budget: int) -> list[list[int]]:
    """Indices sorted by size, cut into groups whose padded size (count × largest) fits ``budget``.

    A group always holds at least one index, so a track longer than the budget goes alone.
    """
    order = sorted(range(len(sizes)), key=sizes.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups and sizes[i] * (len(groups[-1]) + 1) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclass(frozen=True)
class MusicnnPreparer:
    """The CPU half: repeat-pad short tracks to one patch, cap long ones at ``max_patches``."""

    cfg: MusicnnConfig

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def min_samples(self) -> int:
        """Fewest samples whose centred STFT has one full patch of frames."""
        return (self.cfg.patch_frames - 1) * self.cfg.hop_length

    @property
    def max_samples(self) -> int:
        """Samples covering ``max_patches`` patches; later audio is never looked at."""
        return self.cfg.max_patches * self.cfg.patch_frames * self.cfg.hop_length

    def prepare(self, y: np.ndarray) -> np.ndarray:
        """Mono float32 at 16 kHz → the samples the model sees (training used repeat-padding).

        Raises:
            ValueError: an empty or non-mono signal.
        """
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"expected a non-empty mono signal, got shape {y.shape}")
        if y.size < self.min_samples:
            y = np.tile(y, -(-self.min_samples // y.size))[: self.min_samples]
        return np.ascontiguousarray(y[: self.max_samples])


class MusicnnEmbedder:
    """A musicnn or vgg model behind the AudioEmbedder contract: per patch, the vector of
    ``cfg.layer`` (default penultimate / pool5) and the 50 tag probabilities."""

    def __init__(
        self, cfg: MusicnnConfig, device: str | torch.device = "cpu", name: str = "musicnn"
    ) -> None:
        if cfg.n_mels != N_MELS or cfg.pool not in POOLS or cfg.patch_hop <= 0:
            raise ValueError(
                f"musicnn needs n_mels={N_MELS} (got {cfg.n_mels}), pool in "
                f"{', '.join(POOLS)} (got {cfg.pool!r}) and patch_hop > 0 (got {cfg.patch_hop})"
            )
        self.cfg = cfg
        self.name = name
        """The backend id; shards go to OUT/embeddings/<name>/."""
        self.device = torch.device(device)
        self.preparer = MusicnnPreparer(cfg)
        self.sample_rate = cfg.sample_rate
        self.model, self.tag_labels = load_model(cfg.model, self.device)
        self.layers = layers_function(self.model, self.device, cfg.gemm_rows)
        """logmel patches → every layer's outputs; the model's own forward off CPU."""
        self.layer = cfg.layer or self.model.default_layer
        if self.layer not in self.model.layer_names:
            raise ValueError(
                f"{cfg.model} has no layer {self.layer!r}; "
                f"known: {', '.join(self.model.layer_names)}"
            )
        width = layer_width(self.model, self.layer, len(self.tag_labels))
        self.dim = width * (2 if cfg.pool == "mean_std" else 1)
        """Width of the pooled track vector (per-patch rows are ``dim`` / 2 for mean_std)."""
        self.tag_names = tuple(sanitize_tag(t) for t in self.tag_labels)
        """Sanitized ([a-z0-9_]) so that ``tag__<name>`` is a valid column; see ``tag_labels``."""
        self.frontend = LogMelFrontEnd(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels)
        self.frontend = self.frontend.to(self.device)

    def prepare(self, y: np.ndarray) -> np.ndarray:
        """See :meth:`MusicnnPreparer.prepare`."""
        return self.preparer.prepare(y)

    def patches(self, prepared: list[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
        """Log-mel patches of all tracks on the device (n, 187, 96), and patches per track.

        Tracks go through the front end together in length-sorted groups of at most
        ``frontend_batch_samples`` padded samples, so one long track never pads a whole batch.
        """
        frames = self.cfg.patch_frames
        sizes = [p.size for p in prepared]
        per_track: list[torch.Tensor] = [torch.empty(0)] * len(prepared)
        for group in length_groups(sizes, self.cfg.frontend_batch_samples):
            waves = np.zeros((len(group), sizes[group[-1]]), dtype=np.float32)
            for row, i in enumerate(group):
                waves[row, : sizes[i]] = prepared[i]
            logmel = self.frontend(torch.from_numpy(waves).to(self.device))
            for row, i in enumerate(group):
                track = logmel[row, : self.frontend.n_frames(sizes[i])]
                per_track[i] = track.unfold(0, frames, self.cfg.patch_hop).transpose(1, 2)
        return torch.cat(per_track), [t.shape[0] for t in per_track]

    def embed_tracks(self, prepared: list[np.ndarray]) -> list[WindowOutputs]:
        """Per track, (n_patches, layer dim) vectors and (n_patches, 50) tag probabilities."""
        if not prepared:
            return []
        with torch.inference_mode(), ieee_fp32_convs(self.device):
            patches, counts = self.patches(prepared)
            pens, tags = [], []
            for start in range(0, patches.shape[0], self.cfg.batch_size):
                out = self.layers(patches[start : start + self.cfg.batch_size])
                pens.append(out[self.layer])
                tags.append(torch.sigmoid(out["logits"]))
            pen_all = torch.cat(pens).float().cpu().numpy()
            tag_all = torch.cat(tags).float().cpu().numpy()
        bounds = np.cumsum([0, *counts])
        return [
            WindowOutputs(embeddings=pen_all[a:b], tags=tag_all[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]


def layer_width(model: MusicnnModel | VggModel, layer: str, n_tags: int) -> int:
    """Per-patch width of ``layer``: 50 logits, 200 penultimate, 753 pooled, 128 vgg pools."""
    if layer == "logits":
        return n_tags
    if isinstance(model, VggModel):
        return VGG_FILTERS
    return DENSE_UNITS if layer == "penultimate" else FEATURE_CHANNELS


def load_musicnn(
    cfg: EmbedConfig, device: str | None = None, model: str | None = None, name: str = "musicnn"
) -> MusicnnEmbedder:
    """The registry's loader: ``model`` (default ``cfg.musicnn.model``) on ``device`` (default:
    cuda if present), as backend ``name``."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    section = replace(cfg.musicnn, model=model or cfg.musicnn.model)
    return MusicnnEmbedder(section, device, name)


_EXTRACTORS: dict[tuple[str, int], MusicnnEmbedder] = {}


def extract_layers(
    y: np.ndarray,
    sr: int,
    model_name: str,
    layers: Sequence[str] = ("penultimate",),
    pools: Sequence[str] = ("mean",),
    patch_hop: int = PATCH_FRAMES,
) -> dict[str, np.ndarray]:
    """Every ``layer.pool`` summary of a mono waveform, from ONE forward pass (for benchmarks).

    ``y`` is resampled to 16 kHz if ``sr`` differs. Keys "<layer>.<pool>" (e.g.
    "penultimate.mean_std", "pool3.max", "logits.mean") → float32 vectors; also "tags.mean",
    the 50 tag probabilities averaged over patches. Models are cached per (model, hop).
    """
    key = (model_name, patch_hop)
    if key not in _EXTRACTORS:
        cfg = replace(MusicnnConfig(), model=model_name, patch_hop=patch_hop)
        _EXTRACTORS[key] = MusicnnEmbedder(cfg, "cpu", model_name)
    emb = _EXTRACTORS[key]
    if sr != emb.sample_rate:
        import librosa

        y = librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=sr, target_sr=16000)
    with torch.inference_mode():
        patches, _ = emb.patches([emb.prepare(y)])
        outs = [
            emb.layers(patches[a : a + emb.cfg.batch_size])
            for a in range(0, patches.shape[0], emb.cfg.batch_size)
        ]
        acts = {k: torch.cat([o[k] for o in outs]).numpy() for k in outs[0]}
    tags = 1 / (1 + np.exp(-acts["logits"].astype(np.float64)))
    result = {"tags.mean": tags.mean(axis=0).astype(np.float32)}
    for layer in layers:
        for how in pools:
            result[f"{layer}.{how}"] = pool_rows(acts[layer], how)
    return result


def load_musicnn_preparer(cfg: EmbedConfig) -> MusicnnPreparer:
    """The registry's weight-free CPU half, for decode tasks."""
    return MusicnnPreparer(cfg.musicnn)
