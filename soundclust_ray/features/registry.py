"""Feature family names → their sample rate, output columns and pure compute function.

The stage decodes each track once per distinct sample rate among the requested families and
hands the same signal to every family at that rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from soundclust_ray.config import FeaturesConfig
from soundclust_ray.features.classic import classic_columns, compute_classic
from soundclust_ray.features.soundspace import compute_soundspace, soundspace_columns
from soundclust_ray.features.timbre import compute_timbre, timbre_columns


@dataclass(frozen=True)
class FeatureFamily:
    """One named family: how to read its parameters, list its columns and compute it."""

    name: str
    description: str
    sample_rate: Callable[[FeaturesConfig], int]
    columns: Callable[[FeaturesConfig], list[str]]
    compute: Callable[[np.ndarray, int, FeaturesConfig], dict[str, float]]


FAMILIES: dict[str, FeatureFamily] = {
    "timbre": FeatureFamily(
        name="timbre",
        description="seed 002: 64 mel dB + 20 MFCC + 6 spectral stats, mean and std (180)",
        sample_rate=lambda cfg: cfg.timbre.sample_rate,
        columns=lambda cfg: timbre_columns(cfg.timbre),
        compute=lambda y, sr, cfg: compute_timbre(y, sr, cfg.timbre),
    ),
    "classic": FeatureFamily(
        name="classic",
        description=(
            "seed 001: 13 MFCC mean+var, centroid, bandwidth, rolloff, ZCR, tempo, energy, "
            "chroma per 5 s chunk, averaged over chunks (33)"
        ),
        sample_rate=lambda cfg: cfg.classic.sample_rate,
        columns=lambda cfg: classic_columns(cfg.classic),
        compute=lambda y, sr, cfg: compute_classic(y, sr, cfg.classic),
    ),
    "soundspace": FeatureFamily(
        name="soundspace",
        description=(
            "seed 000: rhythm 23 (tempo, beats, BPM histogram, rhythm transform, beats "
            "loudness), spectral 10 (MFCC, centroid, contrast, inharmonicity), tonal 23 "
            "(chroma, HPCP, key) via librosa + essentia (56)"
        ),
        sample_rate=lambda cfg: cfg.soundspace.sample_rate,
        columns=lambda cfg: soundspace_columns(),
        compute=lambda y, sr, cfg: compute_soundspace(y, sr, cfg.soundspace),
    ),
}


def get_families(names: tuple[str, ...] | list[str]) -> list[FeatureFamily]:
    """Look up families by name; an unknown name is a clear ValueError listing the known ones."""
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(
            f"unknown feature family {', '.join(unknown)}; known: {', '.join(sorted(FAMILIES))}"
        )
    return [FAMILIES[n] for n in names]


def feature_columns(cfg: FeaturesConfig) -> list[str]:
    """All output columns of the configured families, in order."""
    return [c for fam in get_families(cfg.families) for c in fam.columns(cfg)]
