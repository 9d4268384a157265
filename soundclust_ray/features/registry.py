"""Feature family names → their sample rates, output columns and pure compute function.

The stage decodes each track once per distinct rate among the requested families
(``decode_rates``) and hands every family its signals (``compute_family``). A family reads
its main rate and may read further ones (soundspace: 44.1 kHz for rhythm and tonal features,
22.05 kHz for spectral ones, as its seed decodes twice); given only its main signal
(``family.compute(y, sr, cfg)``), it resamples that instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from soundclust_ray.config import FeaturesConfig, check_feature_families
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
    compute: Callable[..., dict[str, float]]
    """``compute(y, sr, cfg, extra=None)``; ``extra`` maps further rates to their signals."""
    extra_rates: Callable[[FeaturesConfig], tuple[int, ...]] = lambda cfg: ()
    """Rates besides ``sample_rate`` the family reads when the caller has them decoded."""


FAMILIES: dict[str, FeatureFamily] = {
    "timbre": FeatureFamily(
        name="timbre",
        description="seed 002: 64 mel dB + 20 MFCC + 6 spectral stats, mean and std (180)",
        sample_rate=lambda cfg: cfg.timbre.sample_rate,
        columns=lambda cfg: timbre_columns(cfg.timbre),
        compute=lambda y, sr, cfg, extra=None: compute_timbre(y, sr, cfg.timbre),
    ),
    "classic": FeatureFamily(
        name="classic",
        description=(
            "seed 001: 13 MFCC mean+var, centroid, bandwidth, rolloff, ZCR, tempo, energy, "
            "chroma per 5 s chunk, averaged over chunks (33)"
        ),
        sample_rate=lambda cfg: cfg.classic.sample_rate,
        columns=lambda cfg: classic_columns(cfg.classic),
        compute=lambda y, sr, cfg, extra=None: compute_classic(y, sr, cfg.classic),
    ),
    "soundspace": FeatureFamily(
        name="soundspace",
        description=(
            "seed 000: rhythm 23 (tempo, beats, BPM histogram, rhythm transform, beats "
            "loudness), spectral 10 (MFCC, centroid, contrast, inharmonicity), tonal 23 "
            "(chroma, HPCP, key) via librosa + essentia (56)"
        ),
        sample_rate=lambda cfg: cfg.soundspace.essentia_sample_rate,
        columns=lambda cfg: soundspace_columns(),
        compute=lambda y, sr, cfg, extra=None: compute_soundspace(
            y, sr, cfg.soundspace, y_spectral=(extra or {}).get(cfg.soundspace.sample_rate)
        ),
        extra_rates=lambda cfg: (cfg.soundspace.sample_rate,),
    ),
}


def get_families(names: tuple[str, ...] | list[str]) -> list[FeatureFamily]:
    """Look up families by name; an unknown name is a clear ValueError listing the known ones."""
    check_feature_families(names)
    return [FAMILIES[n] for n in names]


def feature_columns(cfg: FeaturesConfig) -> list[str]:
    """All output columns of the configured families, in order."""
    return [c for fam in get_families(cfg.families) for c in fam.columns(cfg)]


def decode_rates(families: list[FeatureFamily], cfg: FeaturesConfig) -> list[int]:
    """Every distinct rate the families read (main and extra), in first-use order."""
    rates: list[int] = []
    for family in families:
        for rate in (family.sample_rate(cfg), *family.extra_rates(cfg)):
            if rate not in rates:
                rates.append(rate)
    return rates


def compute_family(
    family: FeatureFamily, signals: dict[int, np.ndarray], cfg: FeaturesConfig
) -> dict[str, float]:
    """Run one family on a track decoded at ``decode_rates`` (``signals``: rate → samples)."""
    rate = family.sample_rate(cfg)
    extra = {r: signals[r] for r in family.extra_rates(cfg) if r in signals}
    return family.compute(signals[rate], rate, cfg, extra=extra)
