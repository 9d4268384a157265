"""Shared, vectorized spectral building blocks for the feature families.

Each function reproduces what the named librosa function computes from ``y`` (same framing,
window, padding, filters and formulas) but takes a spectrogram that the caller computes once
and shares, works on stacks of signals (leading axes), and replaces librosa's per-call einsum
and float64 broadcasting with one BLAS product. The FFT is scipy's pocketfft in float32
(librosa's default numpy FFT upcasts), so values agree with librosa to float rounding, not
bit for bit; ``tests/test_features_*`` state the tolerances.
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import scipy.fft
import scipy.signal

from soundclust_ray.audio.errors import TrackError

AMIN_DB = 1e-10
"""librosa.power_to_db's amin."""
TOP_DB = 80.0
"""librosa.power_to_db's top_db."""
ZCR_THRESHOLD = 1e-10
"""librosa.zero_crossings' threshold: samples this close to 0 count as 0 (positive)."""


class FeatureError(TrackError):
    """A signal a feature family cannot describe (becomes an error row, never a NaN column)."""


def check_signal(y: np.ndarray, family: str) -> np.ndarray:
    """A 1-D float32 finite, non-empty signal, or a FeatureError saying what is wrong."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise FeatureError(f"{family}: expected a mono 1-D signal, got shape {y.shape}")
    if y.size == 0:
        raise FeatureError(f"{family}: empty signal")
    if not np.isfinite(y).all():
        raise FeatureError(f"{family}: signal contains NaN or infinite samples")
    return y


def finite_or_raise(values: dict[str, float], family: str) -> dict[str, float]:
    """Return ``values`` when all are finite; otherwise raise instead of writing NaN columns."""
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    if bad:
        raise FeatureError(f"{family}: non-finite values for {', '.join(bad[:5])}")
    return values


@lru_cache(maxsize=16)
def hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window librosa.stft uses (float32)."""
    return scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)


def frame_signal(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """Strided view ``(..., n_frames, frame_length)`` of frames starting every ``hop_length``."""
    n_frames = 1 + (y.shape[-1] - frame_length) // hop_length
    strides = (*y.strides[:-1], y.strides[-1] * hop_length, y.strides[-1])
    return np.lib.stride_tricks.as_strided(
        y, shape=(*y.shape[:-1], n_frames, frame_length), strides=strides, writeable=False
    )


STFT_BLOCK_FRAMES = 64
"""Frames per FFT call: the windowed block (64 x n_fft float32) stays in L2 cache."""


def stft_magnitude(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``|librosa.stft(y, n_fft, hop_length)|``: centred, zero-padded, Hann; float32 (..., f, t).

    Works on any leading axes (a stack of chunks is one call). Frames are windowed into one
    reused cache-sized buffer and transformed in place, block by block. The result is a
    (..., f, t) view of a frame-major array: reductions over frequency (cumsum, flatness,
    chroma peaks) then run along contiguous memory, and matrix products read it transposed
    at no cost.
    """
    y = np.asarray(y, dtype=np.float32)
    pad = [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    frames = frame_signal(np.pad(y, pad, mode="constant"), n_fft, hop_length)
    n_frames, n_bins = frames.shape[-2], n_fft // 2 + 1
    out = np.empty((*frames.shape[:-2], n_frames, n_bins), dtype=np.float32)
    window = hann_window(n_fft)
    buffer = np.empty((STFT_BLOCK_FRAMES, n_fft), dtype=np.float32)
    for signal, dest in zip(
        frames.reshape(-1, n_frames, n_fft), out.reshape(-1, n_frames, n_bins), strict=True
    ):
        for start in range(0, n_frames, STFT_BLOCK_FRAMES):
            stop = min(start + STFT_BLOCK_FRAMES, n_frames)
            block = buffer[: stop - start]
            np.multiply(signal[start:stop], window, out=block)
            np.abs(scipy.fft.rfft(block, axis=-1, overwrite_x=True), out=dest[start:stop])
    return out.swapaxes(-1, -2)


@lru_cache(maxsize=32)
def mel_basis(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's default (Slaney) mel filterbank, built once per parameter set."""
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)


def mel_power(power: np.ndarray, sr: int, n_mels: int) -> np.ndarray:
    """``librosa.feature.melspectrogram(S=power)`` as one matrix product per signal."""
    n_fft = 2 * (power.shape[-2] - 1)
    return np.matmul(mel_basis(sr, n_fft, n_mels), power)


def power_to_db(power: np.ndarray, ref_max: bool) -> np.ndarray:
    """``librosa.power_to_db`` applied separately to each signal of a stack (..., f, t).

    ``ref_max=True`` is ``ref=np.max``, otherwise ``ref=1.0``; the 80 dB floor is relative to
    each signal's own maximum, exactly as separate librosa calls would do.
    """
    db = 10.0 * np.log10(np.maximum(AMIN_DB, power))
    if ref_max:
        ref = np.max(power, axis=(-2, -1), keepdims=True)
        db -= 10.0 * np.log10(np.maximum(AMIN_DB, ref))
    return np.maximum(db, np.max(db, axis=(-2, -1), keepdims=True) - TOP_DB)


def mfcc_from_db(mel_db: np.ndarray, n_mfcc: int) -> np.ndarray:
    """``librosa.feature.mfcc(S=mel_db)``: orthonormal DCT-II over mel bands."""
    return scipy.fft.dct(mel_db, axis=-2, type=2, norm="ortho")[..., :n_mfcc, :]


MOMENT_BLOCK_FRAMES = 4096
"""Frames per float64 moment product (bounds memory on long tracks)."""


@lru_cache(maxsize=16)
def _moment_weights(sr: int, n_fft: int) -> np.ndarray:
    freq = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    return np.stack([np.ones_like(freq), freq, freq**2])


def centroid_bandwidth(mag: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """librosa's spectral centroid and (p=2) bandwidth of a magnitude spectrogram.

    Both come from the first three moments of each frame, one float64 product:
    centroid = E[f], bandwidth = sqrt(E[f^2] - E[f]^2) (librosa's sum of |f - c|^2 weights).
    Frames with no energy give 0 for both, as in librosa.
    """
    n_fft = 2 * (mag.shape[-2] - 1)
    weights = _moment_weights(sr, n_fft)
    moments = np.empty((*mag.shape[:-2], 3, mag.shape[-1]))
    for start in range(0, mag.shape[-1], MOMENT_BLOCK_FRAMES):  # float64 copies stay small
        stop = start + MOMENT_BLOCK_FRAMES
        moments[..., start:stop] = np.matmul(weights, mag[..., start:stop].astype(np.float64))
    total = moments[..., 0, :]
    safe = np.where(total > 0, total, 1.0)
    centroid = np.where(total > 0, moments[..., 1, :] / safe, 0.0)
    second = np.where(total > 0, moments[..., 2, :] / safe, 0.0)
    bandwidth = np.sqrt(np.maximum(second - centroid**2, 0.0))
    return centroid, bandwidth


def rolloff(mag: np.ndarray, sr: int, roll_percent: float) -> np.ndarray:
    """``librosa.feature.spectral_rolloff(S=mag)``: lowest bin holding ``roll_percent`` energy.

    The same float32 cumulative sum and comparison as librosa (identical for the same
    ``mag``), without its float64 ``nan``-masked frequency array.
    """
    n_fft = 2 * (mag.shape[-2] - 1)
    cumulative = np.cumsum(mag, axis=-2)
    threshold = roll_percent * cumulative[..., -1:, :]
    index = np.argmax(cumulative >= threshold, axis=-2)
    return librosa.fft_frequencies(sr=sr, n_fft=n_fft)[index]


def flatness(mag: np.ndarray) -> np.ndarray:
    """``librosa.feature.spectral_flatness(S=mag)`` (power 2, amin 1e-10)."""
    power = np.maximum(AMIN_DB, mag**2)
    gmean = np.exp(np.mean(np.log(power), axis=-2))
    return gmean / np.mean(power, axis=-2)


def zero_crossing_rate(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate(y)`` (centred, edge padding) via a running count.

    A crossing at sample k compares samples k-1 and k; a frame counts the crossings strictly
    inside it. Integer counts make this exact.
    """
    half = frame_length // 2
    padded = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(half, half)], mode="edge")
    signs = np.signbit(np.where(np.abs(padded) <= ZCR_THRESHOLD, 0.0, padded))
    counts = np.concatenate(
        [
            np.zeros((*signs.shape[:-1], 1), dtype=np.int64),
            np.cumsum(signs[..., 1:] != signs[..., :-1], axis=-1),
        ],
        axis=-1,
    )
    n_frames = 1 + (padded.shape[-1] - frame_length) // hop_length
    starts = np.arange(n_frames) * hop_length
    inside = counts[..., starts + frame_length - 1] - counts[..., starts]
    return inside / frame_length


RMS_BLOCK_FRAMES = 4096
"""Frames per block of the RMS framing (a frame copy is frame_length x larger than ``y``)."""


def rms(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """``librosa.feature.rms(y)`` (centred, zero padding), framed block by block."""
    half = frame_length // 2
    padded = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(half, half)], mode="constant")
    frames = frame_signal(padded, frame_length, hop_length)
    out = np.empty(frames.shape[:-1], dtype=np.float32)
    for start in range(0, frames.shape[-2], RMS_BLOCK_FRAMES):
        block = frames[..., start : start + RMS_BLOCK_FRAMES, :]
        out[..., start : start + RMS_BLOCK_FRAMES] = np.sqrt(np.mean(np.abs(block) ** 2, axis=-1))
    return out


def trim_bounds(
    level: np.ndarray, top_db: float, hop_length: int, n_samples: int
) -> tuple[int, int]:
    """``librosa.effects.trim(ref=np.max)``'s kept interval, from the frames' ``rms``.

    Frames more than ``top_db`` below the loudest are silent; the interval runs from the
    first to one frame past the last non-silent frame ((0, 0) when all are silent).
    """
    magnitude = np.abs(level)
    ref = np.max(magnitude)
    power = np.square(magnitude)
    db = 10.0 * np.log10(np.maximum(AMIN_DB, power))
    db -= 10.0 * np.log10(np.maximum(AMIN_DB, ref**2))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * hop_length), min(n_samples, int((loud[-1] + 1) * hop_length))


def _piptrack_band(power: np.ndarray, sr: int, fmin: float = 150.0, fmax: float = 4000.0):
    """``librosa.piptrack(S=power)`` restricted to the bins it keeps (fmin <= f < fmax).

    librosa interpolates over every bin then discards those outside the band; computing on
    the band plus one neighbour each side gives the same values at a quarter of the cost.
    """
    n_fft = 2 * (power.shape[-2] - 1)
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    inside = np.flatnonzero((fmin <= freqs) & (freqs < min(fmax, sr / 2)))
    if inside.size == 0:
        empty = np.zeros((*power.shape[:-2], 0, power.shape[-1]), dtype=power.dtype)
        return empty, empty
    lo, hi = inside[0], inside[-1] + 1
    lo_ext, hi_ext = max(lo - 1, 0), min(hi + 1, power.shape[-2])
    S = power[..., lo_ext:hi_ext, :]
    ref = 0.1 * np.max(power, axis=-2, keepdims=True)
    # np.gradient / parabolic interpolation / local max on the extended band, as librosa does
    # on the full spectrum (interior bins only depend on their two neighbours).
    avg = np.gradient(S, axis=-2) if S.shape[-2] > 1 else np.zeros_like(S)
    a = S[..., 2:, :] + S[..., :-2, :] - 2 * S[..., 1:-1, :]
    b = (S[..., 2:, :] - S[..., :-2, :]) / 2
    shift = np.zeros_like(S)
    shift[..., 1:-1, :] = np.where(np.abs(b) >= np.abs(a), 0, -b / np.where(a == 0, 1, a))
    thresholded = S * (ref < S)
    local = np.zeros(S.shape, dtype=bool)
    local[..., 1:-1, :] = (thresholded[..., 1:-1, :] > thresholded[..., :-2, :]) & (
        thresholded[..., 1:-1, :] >= thresholded[..., 2:, :]
    )
    sel = slice(lo - lo_ext, lo - lo_ext + (hi - lo))
    bins = np.arange(lo, hi)[:, None]
    keep = local[..., sel, :]
    # librosa computes the frequency in float64 and stores it in a float32 array
    frequency = ((bins + shift[..., sel, :]) * float(sr) / n_fft).astype(S.dtype)
    pitches = np.where(keep, frequency, 0)
    mags = np.where(keep, S[..., sel, :] + 0.5 * avg[..., sel, :] * shift[..., sel, :], 0)
    return pitches, mags


def estimate_tuning(power: np.ndarray, sr: int, bins_per_octave: int = 12) -> float:
    """``librosa.estimate_tuning(S=power)`` of one signal (the tuning ``chroma_stft`` uses)."""
    pitches, mags = _piptrack_band(power, sr)
    voiced = pitches > 0
    if not voiced.any():
        return 0.0
    threshold = np.median(mags[voiced])
    frequencies = pitches[(mags >= threshold) & voiced]
    if not np.any(frequencies):
        return 0.0
    residual = np.mod(bins_per_octave * librosa.hz_to_octs(frequencies), 1.0)
    residual[residual >= 0.5] -= 1.0
    bins = np.linspace(-0.5, 0.5, int(np.ceil(1.0 / 0.01)) + 1)
    counts, edges = np.histogram(residual, bins)
    return float(edges[np.argmax(counts)])


@lru_cache(maxsize=256)
def _chroma_basis(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    return librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning)


def chroma(power: np.ndarray, sr: int) -> np.ndarray:
    """``librosa.feature.chroma_stft(S=power)`` of one signal: own tuning, inf-norm per frame."""
    n_fft = 2 * (power.shape[-2] - 1)
    raw = np.matmul(_chroma_basis(sr, n_fft, estimate_tuning(power, sr)), power)
    return librosa.util.normalize(raw, norm=np.inf, axis=-2)


TEMPO_WINDOW_S = 8.0
"""librosa.feature.tempo's ac_size: autocorrelation window of the tempogram."""
TEMPO_START_BPM = 120.0
TEMPO_STD_BPM = 1.0
TEMPO_MAX_BPM = 320.0
"""librosa.feature.tempo's log-normal prior (start_bpm, std_bpm) and max_tempo."""
TEMPO_BLOCK_FRAMES = 2048
"""Onset frames per autocorrelation block (a 10 min track at 44.1 kHz has 52k frames)."""


def tempo(onset_envelope: np.ndarray, sr: int, hop_length: int) -> float:
    """``librosa.feature.tempo(onset_envelope=...)`` with its defaults; 0 without onsets.

    librosa averages, over frames, each frame's windowed autocorrelation divided by its
    maximum (the lag-0 energy). The inverse FFT is linear, so the average is one inverse FFT
    of the energy-weighted mean power spectrum instead of one per frame. A silent envelope
    gives 0, as ``librosa.beat.beat_track`` reports it.
    """
    env = np.asarray(onset_envelope)
    if not env.any():
        return 0.0
    n = env.shape[-1]
    win = int(librosa.time_to_frames(TEMPO_WINDOW_S, sr=sr, hop_length=hop_length))
    padded = np.pad(env, (win // 2, win // 2), mode="linear_ramp", end_values=(0, 0))
    window = scipy.signal.get_window("hann", win, fftbins=True)
    frames = frame_signal(padded, win, 1)[:n]
    n_pad = scipy.fft.next_fast_len(2 * win - 1, real=True)
    weighted = np.zeros(n_pad // 2 + 1)
    for start in range(0, n, TEMPO_BLOCK_FRAMES):  # blocks bound memory on long tracks
        block = frames[start : start + TEMPO_BLOCK_FRAMES] * window
        spectrum = scipy.fft.rfft(block, n=n_pad, axis=-1)
        energy = np.einsum("ij,ij->i", block, block)
        usable = energy > np.finfo(np.float64).tiny
        weights = np.where(usable, 1.0 / np.where(usable, energy, 1.0), 0.0)
        weighted += weights @ (spectrum.real**2 + spectrum.imag**2)
    mean_acf = scipy.fft.irfft(weighted / n, n=n_pad)[:win]
    bpms = librosa.tempo_frequencies(win, hop_length=hop_length, sr=sr)
    with np.errstate(divide="ignore"):
        logprior = -0.5 * ((np.log2(bpms) - np.log2(TEMPO_START_BPM)) / TEMPO_STD_BPM) ** 2
    logprior[: int(np.argmax(bpms < TEMPO_MAX_BPM))] = -np.inf
    return float(bpms[np.argmax(np.log1p(1e6 * mean_acf) + logprior)])
