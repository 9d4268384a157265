"""The 180-d timbre family of seed 002: mel, MFCC and spectral statistics of a trimmed track.

One STFT magnitude is computed and shared by the mel spectrogram, centroid, bandwidth,
rolloff and flatness (the seed recomputes it five times); each librosa call given ``S=``
computes exactly what it computes from ``y=``, so values match the seed to float rounding.
"""

from __future__ import annotations

import librosa
import numpy as np

from soundclust_ray.config import TimbreConfig

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


def trim_silence(y: np.ndarray, sr: int, cfg: TimbreConfig) -> np.ndarray:
    """Trim leading/trailing silence; keep the whole signal if too little would remain."""
    trimmed, _ = librosa.effects.trim(y, top_db=cfg.trim_top_db)
    if len(trimmed) < int(cfg.min_trimmed_s * sr):
        return y
    return trimmed


def compute_timbre(y: np.ndarray, sr: int, cfg: TimbreConfig) -> dict[str, float]:
    """180 timbre statistics of one mono signal at ``cfg.sample_rate``."""
    y = trim_silence(y, sr, cfg)
    mag = np.abs(librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length))
    mel = librosa.feature.melspectrogram(S=mag**2, sr=sr, n_mels=cfg.n_mels)
    mel_db = librosa.power_to_db(mel, ref=np.max)
    mfcc = librosa.feature.mfcc(S=mel_db, sr=sr, n_mfcc=cfg.n_mfcc)
    spectral = [
        librosa.feature.spectral_centroid(S=mag, sr=sr)[0],
        librosa.feature.spectral_bandwidth(S=mag, sr=sr)[0],
        librosa.feature.spectral_rolloff(S=mag, sr=sr, roll_percent=cfg.rolloff_percent)[0],
        librosa.feature.spectral_flatness(S=mag)[0],
        librosa.feature.rms(y=y, frame_length=cfg.n_fft, hop_length=cfg.hop_length)[0],
        librosa.feature.zero_crossing_rate(y, frame_length=cfg.n_fft, hop_length=cfg.hop_length)[0],
    ]
    values = np.concatenate(
        [
            mel_db.mean(axis=1),
            mel_db.std(axis=1),
            mfcc.mean(axis=1),
            mfcc.std(axis=1),
            np.array([stat for s in spectral for stat in (s.mean(), s.std())]),
        ]
    )
    return dict(zip(timbre_columns(cfg), values.astype(np.float32).tolist(), strict=True))
