"""musicnn (Pons & Serra 2019) pretrained music taggers, ported from TensorFlow 1 to PyTorch.

The wheel of ``musicnn`` 0.1.0 (ISC) ships TF checkpoints; ``convert_musicnn.py`` turns the
two musicnn models into the safetensors files in ``weights/`` so a run needs neither
TensorFlow nor a network. Layer by layer the graph follows ``shared/notes/musicnn.md``:
log-mel patches of 187 frames → a musically motivated front end (timbral + temporal convs,
max over mel) → dense 1-D conv mid-end → max/mean pooling over time → 200-d penultimate
→ 50 sigmoid tags. Every batch-norm is applied after its ReLU, with epsilon 1e-3, as in TF.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from soundclust_ray.config import EmbedConfig, MusicnnConfig
from soundclust_ray.embed.base import EmbedderLoadError, WindowOutputs
from soundclust_ray.embed.pooling import POOLS

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_NAMES = ("MSD_musicnn", "MTT_musicnn")
"""Shipped models: same graph, trained on Million Song Dataset / MagnaTagATune tags."""
METADATA_KEY = "musicnn"
"""safetensors metadata key holding a JSON object: model, source, wheel_sha256, license, tags."""
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

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate (batch, 200), tag probabilities (batch, n_tags))."""
        x = self.input_bn(logmel.unsqueeze(1))  # (B, 1, T, mel), NCHW with H = time
        padded = F.pad(x, (0, 0, 3, 3))
        front = [
            conv_relu_bn_max(padded, conv, bn)
            for conv, bn in zip(self.timbral, self.timbral_bn, strict=True)
        ]
        for conv, bn, k in zip(self.temporal, self.temporal_bn, TEMPORAL_LENGTHS, strict=True):
            # TF 'same' padding puts the odd extra frame of an even kernel after the input.
            same = F.pad(x, (0, 0, (k - 1) // 2, k - 1 - (k - 1) // 2))
            front.append(conv_relu_bn_max(same, conv, bn))
        feats = [torch.cat(front, dim=1)]  # (B, 561, T)
        h = feats[0]
        for i, (conv, bn) in enumerate(zip(self.mid, self.mid_bn, strict=True)):
            out = bn(F.relu(conv(h)))
            h = out if i == 0 else out + h
            feats.append(h)
        z = torch.cat(feats, dim=1)  # (B, 753, T)
        # TF stacks [max, mean] on a last axis and flattens: channels interleave max/mean.
        pooled = torch.stack((z.amax(dim=2), z.mean(dim=2)), dim=2).flatten(1)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return penultimate, torch.sigmoid(self.classifier(penultimate))


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


def load_model(model: str, device: str | torch.device = "cpu") -> tuple[MusicnnModel, list[str]]:
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
    net = MusicnnModel(n_tags=len(labels))
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
    """musicnn behind the AudioEmbedder contract: one 200-d penultimate + 50 tags per patch."""

    name = "musicnn"
    dim = DENSE_UNITS

    def __init__(self, cfg: MusicnnConfig, device: str | torch.device = "cpu") -> None:
        if cfg.n_mels != N_MELS or cfg.pool not in POOLS:
            raise ValueError(
                f"musicnn needs n_mels={N_MELS} (got {cfg.n_mels}) and pool in "
                f"{', '.join(POOLS)} (got {cfg.pool!r})"
            )
        self.cfg = cfg
        self.device = torch.device(device)
        self.preparer = MusicnnPreparer(cfg)
        self.sample_rate = cfg.sample_rate
        self.model, self.tag_labels = load_model(cfg.model, self.device)
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
                n = self.frontend.n_frames(sizes[i]) // frames
                per_track[i] = logmel[row, : n * frames].reshape(n, frames, -1)
        return torch.cat(per_track), [t.shape[0] for t in per_track]

    def embed_tracks(self, prepared: list[np.ndarray]) -> list[WindowOutputs]:
        """Per track, (n_patches, 200) penultimates and (n_patches, 50) tag probabilities."""
        if not prepared:
            return []
        with torch.inference_mode(), ieee_fp32_convs(self.device):
            patches, counts = self.patches(prepared)
            pens, tags = [], []
            for start in range(0, patches.shape[0], self.cfg.batch_size):
                pen, tag = self.model(patches[start : start + self.cfg.batch_size])
                pens.append(pen)
                tags.append(tag)
            pen_all = torch.cat(pens).float().cpu().numpy()
            tag_all = torch.cat(tags).float().cpu().numpy()
        bounds = np.cumsum([0, *counts])
        return [
            WindowOutputs(embeddings=pen_all[a:b], tags=tag_all[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]


def load_musicnn(cfg: EmbedConfig, device: str | None = None) -> MusicnnEmbedder:
    """The registry's loader: ``cfg.musicnn.model`` on ``device`` (default: cuda if present)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return MusicnnEmbedder(cfg.musicnn, device)


def load_musicnn_preparer(cfg: EmbedConfig) -> MusicnnPreparer:
    """The registry's weight-free CPU half, for decode tasks."""
    return MusicnnPreparer(cfg.musicnn)
