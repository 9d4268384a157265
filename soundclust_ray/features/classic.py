"""The classic 5 s chunk features of seed 001 (33 values per chunk).

Seed 001 names the features but not the calls; this module fixes them to librosa's defaults
(n_fft 2048, hop 512, 128 mel bands), per chunk:

- ``mfcc_00..12_mean`` / ``mfcc_00..12_var``: ``librosa.feature.mfcc(n_mfcc=13)`` over frames (26)
- ``centroid_mean``, ``bandwidth_mean``, ``rolloff_mean`` (85 %), ``zcr_mean``: frame means (4)
- ``tempo_bpm``: the tempo ``librosa.beat.beat_track`` returns (0 for a chunk without onsets)
- ``energy``: ``mean(y**2)``, the seed's "mean squared signal value"
- ``chroma_mean``: mean of ``librosa.feature.chroma_stft`` over pitch classes and frames

giving the seed's "approximately 33 dimensions". A track is cut into ``chunk_s`` chunks; a last
partial chunk is zero-padded when at least ``padding_threshold`` of it is present, otherwise
dropped; at most ``max_chunks`` chunks are kept (see ``classic_chunk_cap``). The per-track
vector is the mean over chunks; ``compute_classic_chunks`` gives the chunk rows themselves.

All chunks go through one batched STFT shared by the mel/MFCC/onset, centroid, bandwidth,
rolloff and chroma computations; ``beat_track``'s beat tracking is skipped because its tempo
estimate only depends on the onset envelope (``dsp.tempo``).
"""

from __future__ import annotations

from collections.abc import Sequence

import librosa
import numpy as np

from soundclust_ray.config import ClassicConfig
from soundclust_ray.features import dsp

FAMILY = "classic"


def classic_feature_names(cfg: ClassicConfig) -> list[str]:
    """Per-chunk feature names without the family prefix."""
    names = [f"mfcc_{i:02d}_mean" for i in range(cfg.n_mfcc)]
    names += [f"mfcc_{i:02d}_var" for i in range(cfg.n_mfcc)]
    names += ["centroid_mean", "bandwidth_mean", "rolloff_mean", "zcr_mean"]
    names += ["tempo_bpm", "energy", "chroma_mean"]
    return names


def classic_columns(cfg: ClassicConfig) -> list[str]:
    """Output column names (``classic__<feature>``)."""
    return [f"{FAMILY}__{n}" for n in classic_feature_names(cfg)]


def _chunk_samples(cfg: ClassicConfig) -> int:
    return int(round(cfg.chunk_s * cfg.sample_rate))


def count_chunks(n_samples: int, cfg: ClassicConfig) -> int:
    """Chunks a signal of ``n_samples`` yields before any cap (full ones + a padded last one)."""
    length = _chunk_samples(cfg)
    full, rest = divmod(int(n_samples), length)
    return full + int(rest > 0 and rest >= cfg.padding_threshold * length)


def classic_chunk_cap(durations_s: Sequence[float] | np.ndarray, cfg: ClassicConfig) -> int:
    """Chunks per track for a corpus: the count at the ``chunk_quantile`` of its durations.

    Seed 001 caps every track at the number of chunks of a lower-quantile duration so long
    tracks do not outweigh short ones; never less than one chunk.

    Raises:
        ValueError: no finite durations were given.
    """
    durations = np.asarray(durations_s, dtype=np.float64)
    durations = durations[np.isfinite(durations)]
    if durations.size == 0:
        raise ValueError("classic_chunk_cap needs at least one finite track duration")
    q = float(np.quantile(durations, cfg.chunk_quantile))
    return max(1, count_chunks(int(round(q * cfg.sample_rate)), cfg))


def split_chunks(y: np.ndarray, cfg: ClassicConfig) -> np.ndarray:
    """``(n_chunks, chunk_samples)`` chunks of ``y``, last one zero-padded, capped.

    Raises:
        FeatureError: the signal is shorter than ``padding_threshold`` of one chunk.
    """
    length = _chunk_samples(cfg)
    n = count_chunks(y.shape[0], cfg)
    if cfg.max_chunks is not None:
        n = min(n, cfg.max_chunks)
    if n == 0:
        raise _too_short(y.shape[0], cfg)
    chunks = np.zeros((n, length), dtype=np.float32)
    flat = chunks.reshape(-1)
    used = min(n * length, y.shape[0])
    flat[:used] = y[:used]
    return chunks


def _too_short(n_samples: int, cfg: ClassicConfig) -> dsp.FeatureError:
    return dsp.FeatureError(
        f"{FAMILY}: {n_samples / cfg.sample_rate:.2f} s is shorter than "
        f"{cfg.padding_threshold:.0%} of one {cfg.chunk_s:g} s chunk"
    )


def _chunk_matrix(chunks: np.ndarray, sr: int, cfg: ClassicConfig) -> np.ndarray:
    """``(n_chunks, 33)`` feature matrix of a chunk stack, in ``classic_feature_names`` order."""
    mag = dsp.stft_magnitude(chunks, cfg.n_fft, cfg.hop_length)
    power = mag**2
    mel_db = dsp.power_to_db(dsp.mel_power(power, sr, cfg.n_mels), ref_max=False)
    mfcc = dsp.mfcc_from_db(mel_db, cfg.n_mfcc)
    centroid, bandwidth = dsp.centroid_bandwidth(mag, sr)
    onset = librosa.onset.onset_strength(
        S=mel_db, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, aggregate=np.median
    )
    tempo = np.array([dsp.tempo(env, sr, cfg.hop_length) for env in onset])
    chroma_mean = np.array([dsp.chroma(p, sr).mean() for p in power])
    return np.column_stack(
        [
            mfcc.mean(axis=-1),
            mfcc.var(axis=-1),
            centroid.mean(axis=-1),
            bandwidth.mean(axis=-1),
            dsp.rolloff(mag, sr, cfg.rolloff_percent).mean(axis=-1),
            dsp.zero_crossing_rate(chunks, cfg.n_fft, cfg.hop_length).mean(axis=-1),
            tempo,
            np.mean(chunks**2, axis=-1),
            chroma_mean,
        ]
    )


def compute_classic_chunks(y: np.ndarray, sr: int, cfg: ClassicConfig) -> list[dict[str, float]]:
    """One dict of 33 features per chunk (``--chunk-level`` rows), in chunk order.

    Raises:
        FeatureError: bad signal, or too short for one chunk.
    """
    chunks = split_chunks(dsp.check_signal(y, FAMILY), cfg)
    matrix = _chunk_matrix(chunks, sr, cfg).astype(np.float32)
    columns = classic_columns(cfg)
    return [
        dsp.finite_or_raise(dict(zip(columns, row.tolist(), strict=True)), FAMILY) for row in matrix
    ]


def classic_track_from_chunks(rows: list[dict[str, float]]) -> dict[str, float]:
    """The per-track vector from chunk rows (their mean), so ``--chunk-level`` runs that
    write both products compute the chunks once."""
    if not rows:
        raise dsp.FeatureError(f"{FAMILY}: no chunks to average")
    names = list(rows[0])
    matrix = np.array([[row[n] for n in names] for row in rows], dtype=np.float64)
    return dict(zip(names, matrix.mean(axis=0).astype(np.float32).tolist(), strict=True))


def compute_classic(y: np.ndarray, sr: int, cfg: ClassicConfig) -> dict[str, float]:
    """The per-track classic vector: the mean of its chunks' 33 features.

    Raises:
        FeatureError: bad signal, or too short for one chunk.
    """
    return classic_track_from_chunks(compute_classic_chunks(y, sr, cfg))
