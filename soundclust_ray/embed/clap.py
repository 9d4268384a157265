"""CLAP audio embeddings with a transformers ``ClapModel``, batched, deterministic and device-fed.

The split follows the pipeline: :class:`ClapWindowing` cuts a 48 kHz track into fixed windows on
CPU (pure numpy, no weights), :class:`ClapEmbedder` turns batches of windows into 512-d vectors
on the model's device. The log-mel front end of ``ClapFeatureExtractor`` (a per-clip numpy loop
over STFT frames) is re-done in torch, batched, on the model's device, so the GPU is not left
waiting for the CPU; ``tests/test_clap_frontend.py`` checks it against the extractor.

Determinism: the extractor crops clips longer than its input at random (``rand_trunc``) or
fuses random crops (``fusion``), and with ``fusion`` it marks a random clip of each batch as
"longer". Here no window is ever longer than the model input (longer tracks are cut into
windows), short windows are padded the extractor's way (``repeatpad`` for LAION checkpoints),
and ``is_longer`` is always False, so a track gets the same vector in any batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from soundclust_ray.config import ClapEmbedConfig, EmbedConfig
from soundclust_ray.embed.base import EmbedderLoadError, WindowOutputs

FUSION_CHANNELS = 4
"""The extractor stacks 4 mels (global + 3 crops) when truncation is "fusion"."""
MEL_FLOOR = 1e-10
"""Power floor before dB, as in transformers' ``spectrogram``/``power_to_db`` defaults."""


def pad_window(window: np.ndarray, length: int, padding: str) -> np.ndarray:
    """Pad a window shorter than the model input exactly as ``ClapFeatureExtractor`` does.

    ``repeatpad`` tiles the clip a whole number of times then zero-pads, ``repeat`` tiles and
    cuts, ``pad`` zero-pads.
    """
    n = window.shape[0]
    if n >= length:
        return window[:length]
    if padding == "repeat":
        window = np.tile(window, length // n + 1)[:length]
    elif padding == "repeatpad":
        window = np.tile(window, length // n)
    elif padding != "pad":
        raise ValueError(f"unknown CLAP padding {padding!r}")
    return np.pad(window, (0, length - window.shape[0]))


def window_starts(
    n_samples: int, window: int, max_windows: int, min_last_window: float
) -> list[tuple[int, int]]:
    """(start, stop) of the windows a track is cut into.

    Whole windows back to back; a partial last window is kept when at least ``min_last_window``
    of it is present (always when it is the only one). Above ``max_windows`` an evenly spaced,
    deterministic subset is kept, so a long track is summarised over its whole length.
    """
    if n_samples <= 0:
        raise ValueError("empty signal")
    spans = [(s, s + window) for s in range(0, n_samples - window + 1, window)]
    rest = n_samples - len(spans) * window
    if rest > 0 and (not spans or rest >= min_last_window * window):
        spans.append((len(spans) * window, n_samples))
    if len(spans) > max_windows:
        keep = np.unique(np.round(np.linspace(0, len(spans) - 1, max_windows)).astype(int))
        spans = [spans[i] for i in keep]
    return spans


class ClapWindowing:
    """The CPU half of CLAP: 48 kHz mono signal → (n_windows, input_samples) float32 windows."""

    def __init__(self, cfg: ClapEmbedConfig, sample_rate: int, input_samples: int, padding: str):
        self.sample_rate = sample_rate
        self.input_samples = input_samples
        self.window_samples = int(round(cfg.window_s * sample_rate))
        self.padding = padding
        self.max_windows = cfg.max_windows
        self.min_last_window = cfg.min_last_window
        if not 0 < self.window_samples <= input_samples:
            raise EmbedderLoadError(
                f"CLAP window of {cfg.window_s} s must be > 0 and at most the model's input of "
                f"{input_samples / sample_rate:g} s (longer windows would be cropped at random)"
            )
        if cfg.max_windows < 1:
            raise EmbedderLoadError("max_windows must be at least 1")

    @classmethod
    def from_extractor(cls, cfg: ClapEmbedConfig, extractor) -> ClapWindowing:
        """Read rate, input length and padding from a ``ClapFeatureExtractor``."""
        return cls(
            cfg, int(extractor.sampling_rate), int(extractor.nb_max_samples), extractor.padding
        )

    def prepare(self, y: np.ndarray) -> np.ndarray:
        """Cut and pad one track; deterministic, the same windows the extractor would see."""
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        spans = window_starts(
            y.shape[0], self.window_samples, self.max_windows, self.min_last_window
        )
        out = np.empty((len(spans), self.input_samples), dtype=np.float32)
        for i, (start, stop) in enumerate(spans):
            out[i] = pad_window(y[start:stop], self.input_samples, self.padding)
        return out


class ClapLogMel(torch.nn.Module):
    """``ClapFeatureExtractor``'s log-mel in torch: batched (B, samples) → (B, C, frames, mels).

    Same steps as transformers' numpy ``spectrogram``: reflect-padded centred frames, periodic
    Hann window, |STFT|², the extractor's own mel filters (HTK for fusion, Slaney otherwise),
    floor 1e-10, 10·log10. Computed in float64 like the extractor (in float32, bins 80 dB below
    the peak drift by up to ~2 dB); the output is float32, on whatever device the module is on.
    """

    def __init__(self, extractor):
        super().__init__()
        self.n_fft = int(extractor.fft_window_size)
        self.hop_length = int(extractor.hop_length)
        self.fusion = extractor.truncation == "fusion"
        filters = extractor.mel_filters if self.fusion else extractor.mel_filters_slaney
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window)
        self.register_buffer(
            "mel_t", torch.as_tensor(np.asarray(filters, np.float64).T).contiguous()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            x.to(torch.float64),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.mel_t, power).clamp_min(MEL_FLOOR)
        logmel = (10.0 * torch.log10(mel)).float().transpose(1, 2).unsqueeze(1)
        if self.fusion:
            logmel = logmel.expand(-1, FUSION_CHANNELS, -1, -1)
        return logmel.contiguous()


class ClapEmbedder:
    """A loaded ``ClapModel`` + front end: the ``AudioEmbedder`` for CLAP."""

    name = "clap"
    tag_names: tuple[str, ...] = ()

    def __init__(self, model, extractor, cfg: ClapEmbedConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.windowing = ClapWindowing.from_extractor(cfg, extractor)
        self.sample_rate = self.windowing.sample_rate
        self.dim = int(model.config.projection_dim)
        self.batch_size = int(cfg.batch_size)
        if self.batch_size < 1:
            raise EmbedderLoadError("CLAP batch size must be at least 1")
        self.model = model.to(self.device).eval()
        self.frontend = ClapLogMel(extractor).to(self.device)
        self.autocast = cfg.fp16 and self.device.type == "cuda"

    def prepare(self, y: np.ndarray) -> np.ndarray:
        """CPU side: (n_windows, input_samples) float32, see :class:`ClapWindowing`."""
        return self.windowing.prepare(y)

    def features(self, windows: torch.Tensor) -> torch.Tensor:
        """Model input for a batch of windows already on the device."""
        return self.frontend(windows)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings (B, dim) of a batch of windows on the device (inference mode)."""
        feats = self.features(windows)
        is_longer = torch.zeros((feats.shape[0], 1), dtype=torch.bool, device=self.device)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.autocast):
            out = self.model.get_audio_features(input_features=feats, is_longer=is_longer)
        # transformers 5 returns a model output (unit-norm vector in pooler_output), 4.x a tensor
        return getattr(out, "pooler_output", out).float()

    def _batches(self, prepared: list[np.ndarray]) -> Iterator[np.ndarray]:
        """Windows of all tracks in order, regrouped into batches of ``batch_size``."""
        pending: list[np.ndarray] = []
        size = 0
        for track in prepared:
            start = 0
            while start < track.shape[0]:
                take = min(self.batch_size - size, track.shape[0] - start)
                pending.append(track[start : start + take])
                size += take
                start += take
                if size == self.batch_size:
                    yield np.concatenate(pending)
                    pending, size = [], 0
        if pending:
            yield np.concatenate(pending)

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x

    def embed_windows(self, prepared: list[np.ndarray]) -> np.ndarray:
        """All windows of ``prepared`` tracks → (total_windows, dim) float32, batched across tracks.

        Results stay on the device until the end so CUDA work is queued without a sync per batch.
        """
        outs: list[torch.Tensor] = []
        with torch.inference_mode():
            for batch in self._batches(prepared):
                outs.append(self.forward(self._to_device(batch)))
            if not outs:
                return np.zeros((0, self.dim), dtype=np.float32)
            return torch.cat(outs).cpu().numpy().astype(np.float32, copy=False)

    def embed_tracks(self, prepared: list[np.ndarray]) -> list[WindowOutputs]:
        """One :class:`WindowOutputs` per track, in order (tags None: CLAP has none)."""
        prepared = [
            np.asarray(p, dtype=np.float32).reshape(-1, self.windowing.input_samples)
            for p in prepared
        ]
        vectors = self.embed_windows(prepared)
        bounds = np.cumsum([0] + [p.shape[0] for p in prepared])
        return [
            WindowOutputs(embeddings=vectors[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]


def _offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or Path(source).exists()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0] if text else ''}"[:400]


def _how_to_fix(source: str) -> str:
    hub_id = "laion/larger_clap_music" if _looks_like_path(source) else source
    return (
        "To run without network, save the model once where the hub is reachable (e.g. "
        f"`huggingface-cli download {hub_id} --local-dir DIR`, or ClapModel/ClapProcessor "
        ".save_pretrained(DIR, safe_serialization=True)) "
        "and pass that directory with --clap-model DIR (config.json, model.safetensors, "
        "preprocessor_config.json)."
    )


def _load_pretrained(cls, source: str, what: str, **kwargs):
    """``cls.from_pretrained`` with one clear EmbedderLoadError on any failure."""
    path = Path(source).expanduser()
    if path.is_dir():
        tried = f"local directory {str(path)!r}"
        target = str(path)
    elif _looks_like_path(source):
        raise EmbedderLoadError(
            f"CLAP model directory {source!r} does not exist (or is not a directory). "
            + _how_to_fix(source)
        )
    else:
        offline = _offline()
        where = "local cache; offline mode" if offline else "local cache, then network"
        tried = f"Hugging Face hub id {source!r} ({where})"
        target = source
        kwargs.setdefault("local_files_only", offline)
    try:
        return cls.from_pretrained(target, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every cause becomes the one message below
        raise EmbedderLoadError(
            f"could not load the CLAP {what} from {tried}: {_first_line(exc)}. "
            + _how_to_fix(source)
        ) from exc


def load_clap_extractor(cfg: ClapEmbedConfig):
    """The model's ``ClapFeatureExtractor``, checked against the configured decode rate."""
    from transformers import ClapFeatureExtractor

    extractor = _load_pretrained(ClapFeatureExtractor, cfg.model, "feature extractor")
    if int(extractor.sampling_rate) != int(cfg.sample_rate):
        raise EmbedderLoadError(
            f"CLAP model {cfg.model!r} expects {extractor.sampling_rate} Hz audio but the config "
            f"decodes at {cfg.sample_rate} Hz; set the CLAP sample rate to match"
        )
    return extractor


def load_clap_preparer(cfg: EmbedConfig) -> ClapWindowing:
    """The weight-free CPU half, for decode tasks (reads only preprocessor_config.json)."""
    return ClapWindowing.from_extractor(cfg.clap, load_clap_extractor(cfg.clap))


def load_clap(cfg: EmbedConfig, device: str) -> ClapEmbedder:
    """Load ``cfg.clap.model`` (hub id or local dir; safetensors only, no remote code).

    The text tower is dropped after loading: only audio is embedded, and it halves device memory
    (text queries load it apart: :func:`load_clap_text`).

    Raises:
        EmbedderLoadError: the extractor or weights could not be loaded, or do not fit the config.
    """
    from transformers import ClapModel

    extractor = load_clap_extractor(cfg.clap)
    model = _load_pretrained(ClapModel, cfg.clap.model, "model", use_safetensors=True)
    model.text_model = None
    model.text_projection = None
    return ClapEmbedder(model, extractor, cfg.clap, device)


class ClapTextEncoder:
    """CLAP's text tower: texts → unit-norm vectors in the space of the audio embeddings.

    Unit norm like the audio side (``get_audio_features``' vectors, which a run stores), so a
    text goes through the same post-processing as a track's audio embedding."""

    def __init__(self, model, tokenizer, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        text = model.config
        # RoBERTa numbers positions from padding_idx + 1: the longest input it can take
        longest = int(text.max_position_embeddings) - int(text.pad_token_id) - 1
        self.max_length = min(int(tokenizer.model_max_length), longest)

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), projection_dim) float32, each row of norm 1 (truncated to max_length)."""
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            vectors = self.model(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            ).text_embeds
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)


def load_clap_text(cfg: ClapEmbedConfig, device: str = "cpu") -> ClapTextEncoder:
    """The text tower and tokenizer of ``cfg.model`` (the run's CLAP source), for text queries.

    Loaded apart from :func:`load_clap` (``ClapTextModelWithProjection`` reads only the text
    weights of a ClapModel checkpoint), so a run's audio actors never hold the text tower
    (RoBERTa-base, about 125M of larger_clap_music's parameters) and a query never loads the
    audio tower. Safetensors only, no remote code.

    Raises:
        EmbedderLoadError: the tokenizer or text weights could not be loaded.
    """
    from transformers import AutoTokenizer, ClapTextModelWithProjection
    from transformers.utils import logging as hf_logging

    tokenizer = _load_pretrained(AutoTokenizer, cfg.model, "tokenizer")
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the audio weights it skips are listed as "unexpected"
    hf_logging.disable_progress_bar()
    try:
        model = _load_pretrained(
            ClapTextModelWithProjection, cfg.model, "text model", use_safetensors=True
        )
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
    return ClapTextEncoder(model, tokenizer, device)
