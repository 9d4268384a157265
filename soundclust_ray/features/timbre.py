"""The 180-d timbre family of seed 002: mel, MFCC and spectral statistics of a trimmed track.

The seed computes the STFT five times (mel spectrogram, centroid, bandwidth, rolloff,
flatness); here one magnitude spectrogram is shared by all of them and every statistic is a
vectorized reduction over frames (see ``features.dsp``). ``tests/oracles/features_reference.py``
holds the seed's own sequence of librosa calls, which the tests compare against column by column.
"""

from __future__ import annotations

import numpy as np

from soundclust_ray.config import TimbreConfig
from soundclust_ray.features import dsp

FAMILY = "timbre"
SPECTRAL_NAMES = ("centroid", "bandwidth", "rolloff", "flatness", "rms", "zcr")


def timbre_columns(cfg: TimbreConfig) -> list[str]:
    """Output column names, in the seed's order (mel, MFCC, spectral; mean then std)."""
    names = [f"mel_{i:02d}_mean" for i in range(cfg.n_mels)]
    names += [f"mel_{i:02d}_std" for i in range(cfg.n_mels)]
    names += [f"mfcc_{i:02d}_mean" for i in range(cfg.n_mfcc)]
    names += [f"mfcc_{i:02d}_std" for i in range(cfg.n_mfcc)]
    for name in SPECTRAL_NAMES:
        names += [f"{name}_mean", f"{name}_std"]
    return [f"{FAMILY}__{n}" for n in names]


def trim_silence(y: np.ndarray, sr: int, cfg: TimbreConfig) -> tuple[np.ndarray, np.ndarray]:
    """Trim leading/trailing silence (``librosa.effects.trim``); keep the whole signal if too
    little would remain. Also returns the kept signal's RMS frames, reused when nothing was cut.
    """
    level = dsp.rms(y, cfg.n_fft, cfg.hop_length)
    start, end = dsp.trim_bounds(level, cfg.trim_top_db, cfg.hop_length, y.shape[0])
    if end - start < int(cfg.min_trimmed_s * sr) or (start, end) == (0, y.shape[0]):
        return y, level
    trimmed = y[start:end]
    return trimmed, dsp.rms(trimmed, cfg.n_fft, cfg.hop_length)


def compute_timbre(y: np.ndarray, sr: int, cfg: TimbreConfig) -> dict[str, float]:
    """180 timbre statistics of one mono signal at ``cfg.sample_rate``.

    Raises:
        FeatureError: the signal is empty, not mono, or holds non-finite samples.
    """
    y, level = trim_silence(dsp.check_signal(y, FAMILY), sr, cfg)
    mag = dsp.stft_magnitude(y, cfg.n_fft, cfg.hop_length)
    mel_db = dsp.power_to_db(dsp.mel_power(mag**2, sr, cfg.n_mels), ref_max=True)
    mfcc = dsp.mfcc_from_db(mel_db, cfg.n_mfcc)
    centroid, bandwidth = dsp.centroid_bandwidth(mag, sr)
    spectral = np.stack(
        [
            centroid,
            bandwidth,
            dsp.rolloff(mag, sr, cfg.rolloff_percent),
            dsp.flatness(mag),
            level,
            dsp.zero_crossing_rate(y, cfg.n_fft, cfg.hop_length),
        ]
    )
    spectral_stats = np.stack([spectral.mean(axis=1), spectral.std(axis=1)], axis=1).ravel()
    values = np.concatenate(
        [
            mel_db.mean(axis=1),
            mel_db.std(axis=1),
            mfcc.mean(axis=1),
            mfcc.std(axis=1),
            spectral_stats,
        ]
    )
    out = dict(zip(timbre_columns(cfg), values.astype(np.float32).tolist(), strict=True))
    return dsp.finite_or_raise(out, FAMILY)
