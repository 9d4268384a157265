"""A small labelled corpus synthesized on the spot, so a new user sees the whole job run in minutes.

Four audibly different styles, ten tracks each, 10–20 s, written as real WAV and FLAC files in
style folders with a ``labels.csv`` manifest. Every random draw comes from one seeded generator,
so the corpus (and therefore the demo's results) is identical on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

DEMO_SAMPLE_RATE = 22050
DEMO_TRACKS_PER_STYLE = 10
DEMO_DURATION_RANGE_S = (10.0, 20.0)
DEMO_SEED = 42


def _envelope(n: int, sr: int, attack_s: float, decay_s: float) -> np.ndarray:
    t = np.arange(n) / sr
    return np.minimum(1.0, t / max(attack_s, 1e-4)) * np.exp(-t / decay_s)


def _place(out: np.ndarray, event: np.ndarray, start: int) -> None:
    end = min(len(out), start + len(event))
    if start < end:
        out[start:end] += event[: end - start]


def synth_ambient_pads(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Slow detuned sine chords with a soft noise bed: dark, sustained, no rhythm."""
    t = np.arange(n) / sr
    root = rng.uniform(90, 140)
    y = np.zeros(n)
    for ratio in (1.0, 1.25, 1.5, 2.0):
        for detune in (-0.3, 0.3):
            y += np.sin(2 * np.pi * (root * ratio + detune) * t + rng.uniform(0, 2 * np.pi))
    y *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.15) * t)
    y += 0.02 * np.convolve(rng.standard_normal(n), np.ones(64) / 64, mode="same")
    return y


def synth_electro_drums(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Four-on-the-floor kicks with noisy hi-hats: percussive, broadband, strongly rhythmic."""
    bpm = rng.uniform(118, 132)
    beat = int(sr * 60 / bpm)
    y = np.zeros(n)
    kick_n = int(0.25 * sr)
    tk = np.arange(kick_n) / sr
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-tk * 30)) * tk) * np.exp(-tk * 12)
    hat_n = int(0.05 * sr)
    for start in range(0, n, beat):
        _place(y, kick, start)
        hat = rng.standard_normal(hat_n) * np.exp(-np.arange(hat_n) / sr * 80)
        _place(y, 0.4 * np.diff(hat, prepend=0.0), start + beat // 2)
    return y


def synth_bright_plucks(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Karplus–Strong plucked arpeggios in a high register: bright, tonal, melodic."""
    y = np.zeros(n)
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16])
    base = rng.uniform(440, 660)
    step = int(sr * rng.uniform(0.15, 0.25))
    for start in range(0, n, step):
        freq = base * 2 ** (rng.choice(scale) / 12)
        period = max(2, int(sr / freq))
        length = int(0.6 * sr)
        buf = rng.uniform(-1, 1, period)
        note = np.empty(length)
        for i in range(0, length, period):
            chunk = min(period, length - i)
            note[i : i + chunk] = buf[:chunk]
            buf = 0.996 * 0.5 * (buf + np.roll(buf, 1))
        _place(y, note * _envelope(length, sr, 0.002, 0.3), start)
    return y


def synth_distorted_bass(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Clipped sawtooth bass riffs with crackle: low, dense, harmonically rich."""
    t = np.arange(n) / sr
    notes = rng.choice([41.2, 49.0, 55.0, 61.7, 73.4], size=max(1, n // (sr // 2) + 1))
    freq = np.repeat(notes, sr // 2)[:n]
    phase = np.cumsum(freq) / sr
    saw = 2 * (phase - np.floor(phase + 0.5))
    y = np.tanh(6 * saw) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    crackle = (rng.random(n) < 0.002) * rng.standard_normal(n)
    return y + 0.5 * crackle


STYLES = {
    "ambient_pads": synth_ambient_pads,
    "electro_drums": synth_electro_drums,
    "bright_plucks": synth_bright_plucks,
    "distorted_bass": synth_distorted_bass,
}


def make_demo_corpus(
    root: str | Path,
    tracks_per_style: int = DEMO_TRACKS_PER_STYLE,
    seed: int = DEMO_SEED,
    sample_rate: int = DEMO_SAMPLE_RATE,
) -> Path:
    """Write the corpus under ``root/<style>/`` ; returns the path of its ``labels.csv``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for style, synth in STYLES.items():
        (root / style).mkdir(parents=True, exist_ok=True)
        for i in range(tracks_per_style):
            n = int(rng.uniform(*DEMO_DURATION_RANGE_S) * sample_rate)
            y = synth(rng, n, sample_rate)
            y = 0.8 * y / (np.max(np.abs(y)) + 1e-9)
            ext = "flac" if i % 2 else "wav"
            rel = f"{style}/{style}_{i:02d}.{ext}"
            sf.write(root / rel, y.astype(np.float32), sample_rate, subtype="PCM_16")
            rows.append({"path": rel, "style": style, "duration_s": round(n / sample_rate, 3)})
    manifest = root / "labels.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
