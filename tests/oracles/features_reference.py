"""Plain seed-style versions of the three families, the yardstick for tests and benchmarks.

Each function is the straightforward one-call-at-a-time code of its seed: every librosa
feature recomputed from the waveform, essentia algorithms built on every call, a Python loop
over frames, and (in the ``*_from_path`` variants) the file decoded again per feature group
exactly as seeds 000-002 do with ``librosa.load``. They are deliberately slow; production
code uses ``timbre``, ``classic`` and ``soundspace``, which must match them column by column.

Every parameter is the seed's literal value, never read from ``soundclust_ray.config``: an
oracle that reads the config it checks follows a wrong default instead of catching it.
Used by tests/test_features_*.py and bench/features.py (which puts tests/ on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np

from soundclust_ray.features.soundspace import (
    KEY_INDEX,
    MAJOR_DEGREES,
    MINOR_DEGREES,
    entropy_bits,
    soundspace_columns,
)

# -- timbre (seed 002) ------------------------------------------------------------------------

TIMBRE_SR = 22050  # seed 002: SAMPLE_RATE_TARGET = 22050
TIMBRE_N_MELS = 64  # seed 002: N_MELS = 64
TIMBRE_N_MFCC = 20  # seed 002: N_MFCC = 20
TIMBRE_SPECTRAL = ("centroid", "bandwidth", "rolloff", "flatness", "rms", "zcr")


def timbre_reference_columns() -> list[str]:
    """Seed 002's feature order: mel means, mel stds, MFCC means, MFCC stds, spectral stats."""
    names = [f"mel_{i:02d}_mean" for i in range(TIMBRE_N_MELS)]
    names += [f"mel_{i:02d}_std" for i in range(TIMBRE_N_MELS)]
    names += [f"mfcc_{i:02d}_mean" for i in range(TIMBRE_N_MFCC)]
    names += [f"mfcc_{i:02d}_std" for i in range(TIMBRE_N_MFCC)]
    for name in TIMBRE_SPECTRAL:
        names += [f"{name}_mean", f"{name}_std"]
    return [f"timbre__{n}" for n in names]


def timbre_reference(y: np.ndarray, sr: int = TIMBRE_SR) -> dict[str, float]:
    """Seed 002's ``extract_acoustic_embedding`` body on an already-decoded signal."""
    y_trim, _ = librosa.effects.trim(y, top_db=30)
    if len(y_trim) < int(0.5 * sr):
        y_trim = y
    S = librosa.feature.melspectrogram(
        y=y_trim, sr=sr, n_fft=2048, hop_length=512, n_mels=TIMBRE_N_MELS, power=2.0
    )
    S_db = librosa.power_to_db(S, ref=np.max)
    mfcc = librosa.feature.mfcc(S=S_db, sr=sr, n_mfcc=TIMBRE_N_MFCC)
    spectral = [
        librosa.feature.spectral_centroid(y=y_trim, sr=sr)[0],
        librosa.feature.spectral_bandwidth(y=y_trim, sr=sr)[0],
        librosa.feature.spectral_rolloff(y=y_trim, sr=sr, roll_percent=0.85)[0],
        librosa.feature.spectral_flatness(y=y_trim)[0],
        librosa.feature.rms(y=y_trim)[0],
        librosa.feature.zero_crossing_rate(y_trim)[0],
    ]
    stats = np.concatenate([[np.mean(x), np.std(x)] for x in spectral])
    values = np.concatenate(
        [
            np.mean(S_db, axis=1),
            np.std(S_db, axis=1),
            np.mean(mfcc, axis=1),
            np.std(mfcc, axis=1),
            stats,
        ]
    )
    return dict(zip(timbre_reference_columns(), values.astype(np.float32).tolist(), strict=True))


def timbre_from_path(path: str | Path) -> dict[str, float]:
    """Seed 002 end to end: ``librosa.load`` then the reference features."""
    y, sr = librosa.load(str(path), sr=TIMBRE_SR, mono=True)
    return timbre_reference(y, sr)


# -- classic (seed 001) -----------------------------------------------------------------------

CLASSIC_SR = 22050  # seed 001: librosa.load's default rate
CLASSIC_CHUNK_S = 5.0  # seed 001: "split into 5-second chunks"
CLASSIC_PADDING_THRESHOLD = 0.5  # seed 001's padding_threshold
CLASSIC_N_MFCC = 13  # seed 001: 13 MFCC means + 13 variances + 7 = "approximately 33"


def classic_reference_columns() -> list[str]:
    """Seed 001's 33 names per chunk."""
    names = [f"mfcc_{i:02d}_mean" for i in range(CLASSIC_N_MFCC)]
    names += [f"mfcc_{i:02d}_var" for i in range(CLASSIC_N_MFCC)]
    names += ["centroid_mean", "bandwidth_mean", "rolloff_mean", "zcr_mean"]
    names += ["tempo_bpm", "energy", "chroma_mean"]
    return [f"classic__{n}" for n in names]


def seed_chunks(y: np.ndarray, sr: int = CLASSIC_SR) -> list[np.ndarray]:
    """Seed 001's 5 s chunks: full ones, then a zero-padded last one if half of it is there."""
    length = int(round(CLASSIC_CHUNK_S * sr))
    chunks = [y[i : i + length] for i in range(0, len(y), length)]
    if chunks and len(chunks[-1]) < length:
        last = chunks.pop()
        if len(last) >= CLASSIC_PADDING_THRESHOLD * length:
            chunks.append(np.pad(last, (0, length - len(last))))
    return chunks


def classic_chunk_reference(chunk: np.ndarray, sr: int = CLASSIC_SR) -> list[float]:
    """The 33 seed-001 features of one chunk, each librosa feature computed from the samples."""
    mfcc = librosa.feature.mfcc(y=chunk, sr=sr, n_mfcc=CLASSIC_N_MFCC)
    tempo, _ = librosa.beat.beat_track(y=chunk, sr=sr)
    return [
        *np.mean(mfcc, axis=1),
        *np.var(mfcc, axis=1),
        np.mean(librosa.feature.spectral_centroid(y=chunk, sr=sr)),
        np.mean(librosa.feature.spectral_bandwidth(y=chunk, sr=sr)),
        np.mean(librosa.feature.spectral_rolloff(y=chunk, sr=sr, roll_percent=0.85)),
        np.mean(librosa.feature.zero_crossing_rate(chunk)),
        float(np.atleast_1d(tempo)[0]),
        np.mean(chunk**2),
        np.mean(librosa.feature.chroma_stft(y=chunk, sr=sr)),
    ]


def classic_chunks_reference(y: np.ndarray, sr: int = CLASSIC_SR) -> list[dict[str, float]]:
    """Seed 001's per-chunk loop: one feature row per chunk."""
    columns = classic_reference_columns()
    rows = []
    for chunk in seed_chunks(np.asarray(y, dtype=np.float32), sr):
        values = np.asarray(classic_chunk_reference(chunk, sr), dtype=np.float32)
        rows.append(dict(zip(columns, values.tolist(), strict=True)))
    return rows


def classic_reference(y: np.ndarray, sr: int = CLASSIC_SR) -> dict[str, float]:
    """Mean over the chunk rows (the chunk-average track vector)."""
    rows = classic_chunks_reference(y, sr)
    columns = classic_reference_columns()
    matrix = np.array([[row[c] for c in columns] for row in rows], dtype=np.float64)
    return dict(zip(columns, matrix.mean(axis=0).astype(np.float32).tolist(), strict=True))


def classic_from_path(path: str | Path) -> dict[str, float]:
    """Seed 001 end to end: ``librosa.load`` then the chunk loop."""
    y, sr = librosa.load(str(path), sr=CLASSIC_SR, mono=True)
    return classic_reference(y, sr)


# -- soundspace (seed 000) --------------------------------------------------------------------

SOUNDSPACE_SR = 22050  # seed 000: the spectral group's librosa.load rate
SOUNDSPACE_ESSENTIA_SR = 44100  # seed 000: the rhythm and tonal groups' rate


def _es():
    import essentia
    import essentia.standard as es

    essentia.log.warningActive = False
    essentia.log.infoActive = False
    return es


def _stats32(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return 0.0, 0.0
    return float(np.mean(x)), float(np.std(x))


def rhythm_reference(y44: np.ndarray, sr44: int) -> dict[str, float]:
    """The 23 rhythm features of seed 000, each essentia algorithm built (and run) per use."""
    es = _es()
    out: dict[str, float] = {}
    tempo, _ = librosa.beat.beat_track(y=y44, sr=sr44)
    out["tempo_bpm"] = float(np.atleast_1d(tempo)[0])
    out["onset_strength_mean"], out["onset_strength_std"] = _stats32(
        librosa.onset.onset_strength(y=y44, sr=sr44)
    )
    audio = np.asarray(y44, dtype=np.float32)

    def rhythm():
        try:
            return es.RhythmExtractor2013(method="multifeature")(audio)
        except RuntimeError:
            return 0.0, np.zeros(0), 0.0, np.zeros(0), np.zeros(0)

    _, _, _, _, intervals = rhythm()
    intervals = np.asarray(intervals, dtype=np.float32)
    if intervals.size >= 2:
        mean, std = float(np.mean(intervals)), float(np.std(intervals))
        out |= {
            "beat_interval_mean": mean,
            "beat_interval_std": std,
            "beat_interval_cv": std / mean if mean > 0 else 0.0,
        }
    else:
        out |= dict.fromkeys(("beat_interval_mean", "beat_interval_std", "beat_interval_cv"), 0.0)

    _, _, _, _, intervals = rhythm()
    bpm_keys = (
        "bpm_first_peak",
        "bpm_first_weight",
        "bpm_first_spread",
        "bpm_second_peak",
        "bpm_second_weight",
        "bpm_second_spread",
    )
    if len(intervals) >= 2:
        *peaks, histogram = es.BpmHistogramDescriptors()(np.asarray(intervals, dtype=np.float32))
        out |= {k: float(v) for k, v in zip(bpm_keys, peaks, strict=True)}
        first_w, second_w = float(peaks[1]), float(peaks[4])
        out["bpm_peak_ratio"] = second_w / first_w if first_w > 0 else 0.0
        out["bpm_histogram_entropy"] = entropy_bits(np.asarray(histogram, dtype=np.float32))
    else:
        out |= dict.fromkeys((*bpm_keys, "bpm_peak_ratio", "bpm_histogram_entropy"), 0.0)

    windowing = es.Windowing(type="hann", size=2048)
    spectrum = es.Spectrum(size=2048)
    mel_bands = es.MelBands(
        sampleRate=sr44, numberBands=40, lowFrequencyBound=0, highFrequencyBound=sr44 / 2
    )
    mel_frames = [
        mel_bands(spectrum(windowing(audio[i : i + 2048])))
        for i in range(0, len(audio) - 2048, 1024)
    ]
    rt_keys = (
        "rhythm_transform_mean",
        "rhythm_transform_std",
        "rhythm_transform_max",
        "rhythm_transform_entropy",
    )
    rt = np.zeros(0)
    if len(mel_frames) >= 8:
        rt = es.RhythmTransform(frameSize=8, hopSize=4)(np.array(mel_frames, dtype=np.float32))
    if rt.size:
        flat = rt.flatten()
        out |= {
            "rhythm_transform_mean": float(np.mean(flat)),
            "rhythm_transform_std": float(np.std(flat)),
            "rhythm_transform_max": float(np.max(flat)),
            "rhythm_transform_entropy": entropy_bits(np.abs(flat)),
        }
    else:
        out |= dict.fromkeys(rt_keys, 0.0)

    _, beats, _, _, _ = rhythm()
    bl_keys = (
        "beats_loudness_mean",
        "beats_loudness_std",
        "beats_low_ratio",
        "beats_mid_ratio",
        "beats_high_ratio",
    )
    out |= dict.fromkeys(bl_keys, 0.0)
    if len(beats) >= 2:
        loudness, ratios = es.BeatsLoudness(
            sampleRate=sr44,
            beats=np.asarray(beats, dtype=np.float32),
            frequencyBands=[20, 150, 400, 3200, 7000, sr44 / 2],
        )(audio)
        ratios = np.asarray(ratios, dtype=np.float32)
        if len(loudness):
            out["beats_loudness_mean"], out["beats_loudness_std"] = _stats32(loudness)
        if ratios.ndim == 2 and ratios.shape[1] >= 5:
            out["beats_low_ratio"] = float(np.mean(ratios[:, 0] + ratios[:, 1]))
            out["beats_mid_ratio"] = float(np.mean(ratios[:, 2] + ratios[:, 3]))
            out["beats_high_ratio"] = float(np.mean(ratios[:, 4]))
    return out


def spectral_reference(y22: np.ndarray, sr22: int) -> dict[str, float]:
    """The 10 spectral features of seed 000 (librosa calls from ``y``, essentia frame loop)."""
    es = _es()
    mfcc = librosa.feature.mfcc(y=y22, sr=sr22, n_mfcc=5)
    out = {
        f"mfcc_{i + 1}_mean": float(v)
        for i, v in enumerate(np.asarray(np.mean(mfcc, axis=1), dtype=np.float32))
    }
    out["spectral_centroid_mean"], out["spectral_centroid_std"] = _stats32(
        librosa.feature.spectral_centroid(y=y22, sr=sr22)
    )
    contrast = np.asarray(librosa.feature.spectral_contrast(y=y22, sr=sr22), dtype=np.float32)
    out["spectral_contrast_mean"] = float(np.mean(contrast))
    windowing = es.Windowing(type="blackmanharris62", size=2048)
    spectrum = es.Spectrum(size=2048)
    peaks = es.SpectralPeaks(
        sampleRate=sr22,
        maxPeaks=100,
        minFrequency=20,
        maxFrequency=5000,
        magnitudeThreshold=1e-5,
        orderBy="frequency",
    )
    pitch_yin = es.PitchYinFFT(frameSize=2048, sampleRate=sr22)
    harmonic = es.HarmonicPeaks()
    inharmonicity = es.Inharmonicity()
    values = []
    audio = np.asarray(y22, dtype=np.float32)
    for i in range(0, len(audio) - 2048 + 1, 1024):
        spec = spectrum(windowing(audio[i : i + 2048]))
        pitch, _ = pitch_yin(spec)
        frequencies, magnitudes = peaks(spec)
        if pitch <= 0 or len(frequencies) == 0:
            continue
        values.append(inharmonicity(*harmonic(frequencies, magnitudes, pitch)))
    out["inharmonicity_mean"], out["inharmonicity_std"] = _stats32(np.array(values))
    return out


def tonal_reference(y44: np.ndarray, sr44: int) -> dict[str, float]:
    """The 23 tonal features of seed 000 (chroma alignment, HPCP frame loop, KeyExtractor)."""
    es = _es()
    chroma = np.asarray(librosa.feature.chroma_stft(y=y44, sr=sr44), dtype=np.float32)
    chroma_mean = np.asarray(np.mean(chroma, axis=1), dtype=np.float32)
    total = float(np.sum(chroma_mean, dtype=np.float64))
    out = {"chroma_entropy": entropy_bits(chroma_mean)}
    for name, degrees in (("major_alignment", MAJOR_DEGREES), ("minor_alignment", MINOR_DEGREES)):
        picked = float(np.sum(chroma_mean.astype(np.float64)[list(degrees)]))
        out[name] = picked / total if total > 0 else 0.0
    audio = np.asarray(y44, dtype=np.float32)
    windowing = es.Windowing(type="blackmanharris62", size=4096)
    spectrum = es.Spectrum(size=4096)
    peaks = es.SpectralPeaks(
        sampleRate=sr44,
        maxPeaks=100,
        minFrequency=20,
        maxFrequency=5000,
        magnitudeThreshold=1e-5,
        orderBy="magnitude",
    )
    hpcp = es.HPCP(
        size=12, sampleRate=sr44, minFrequency=20, maxFrequency=5000, normalized="unitSum"
    )
    frames = [
        hpcp(*peaks(spectrum(windowing(audio[i : i + 4096]))))
        for i in range(0, len(audio) - 4096 + 1, 2048)
    ]
    matrix = np.asarray(frames, dtype=np.float32).reshape(-1, 12)
    mean = matrix.mean(axis=0) if len(frames) else np.zeros(12, dtype=np.float32)
    out |= {f"hpcp_{i}": float(mean[i]) for i in range(12)}
    out["hpcp_entropy"] = entropy_bits(mean)
    out["hpcp_std"] = float(np.std(mean))
    out["hpcp_max"] = float(np.max(mean))
    out["hpcp_temporal_std"] = float(np.mean(np.std(matrix, axis=0))) if len(frames) else 0.0
    try:
        key, scale, strength = es.KeyExtractor(sampleRate=sr44)(audio)
    except RuntimeError:
        key, scale, strength = "C", "major", 0.0
    angle = KEY_INDEX.get(key, 0) / 12.0 * 2 * np.pi
    out |= {
        "key_strength": float(strength),
        "is_minor": 1.0 if scale == "minor" else 0.0,
        "key_cos": float(np.cos(angle)),
        "key_sin": float(np.sin(angle)),
    }
    return out


def soundspace_reference(y22: np.ndarray, y44: np.ndarray) -> dict[str, float]:
    """All 56 seed-000 features from the two decodes the seed makes (22.05 and 44.1 kHz)."""
    raw = (
        rhythm_reference(y44, SOUNDSPACE_ESSENTIA_SR)
        | spectral_reference(y22, SOUNDSPACE_SR)
        | tonal_reference(y44, SOUNDSPACE_ESSENTIA_SR)
    )
    columns = soundspace_columns()
    return {c: float(np.float32(raw[c.split("__", 1)[1]])) for c in columns}


def soundspace_from_path(path: str | Path) -> dict[str, float]:
    """Seed 000 end to end: a fresh ``librosa.load`` per feature group (44.1k, 22.05k, 44.1k)."""
    y_rhythm, _ = librosa.load(str(path), sr=SOUNDSPACE_ESSENTIA_SR, mono=True)
    y_spectral, _ = librosa.load(str(path), sr=SOUNDSPACE_SR, mono=True)
    y_tonal, _ = librosa.load(str(path), sr=SOUNDSPACE_ESSENTIA_SR, mono=True)
    raw = (
        rhythm_reference(y_rhythm, SOUNDSPACE_ESSENTIA_SR)
        | spectral_reference(y_spectral, SOUNDSPACE_SR)
        | tonal_reference(y_tonal, SOUNDSPACE_ESSENTIA_SR)
    )
    return {c: float(np.float32(raw[c.split("__", 1)[1]])) for c in soundspace_columns()}


def mismatches(
    fast: dict[str, float],
    ref: dict[str, float],
    rtol: float,
    atol: float = 0.0,
    exact: tuple[str, ...] = (),
    rtol_for: dict[str, float] | None = None,
) -> list[str]:
    """Columns where ``fast`` and ``ref`` differ beyond ``atol + rtol * |ref|``, one line each.

    ``exact`` names (without the family prefix) must be equal; ``rtol_for`` overrides ``rtol``
    for some names. An empty list means the two agree.
    """
    problems = []
    if fast.keys() != ref.keys():
        problems.append(f"missing or extra columns: {sorted(set(fast) ^ set(ref))}")
    for name in sorted(set(fast) & set(ref)):
        short = name.split("__", 1)[-1]
        a, b = fast[name], ref[name]
        tol = 0.0 if short in exact else atol + (rtol_for or {}).get(short, rtol) * abs(b)
        if not abs(a - b) <= tol:
            problems.append(f"{name}: fast {a!r} vs reference {b!r} (tolerance {tol:.3g})")
    return problems
