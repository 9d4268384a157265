"""Soundspace family (seed 000): seed names and groups, faithful to the plain reference."""

from __future__ import annotations

import numpy as np
import pytest
from oracles.features_reference import mismatches, soundspace_reference

from soundclust_ray.audio import load_audio
from soundclust_ray.audio.decode import resample
from soundclust_ray.config import SoundspaceConfig
from soundclust_ray.features import soundspace
from soundclust_ray.features.soundspace import compute_soundspace, soundspace_columns

CFG = SoundspaceConfig()
RTOL = 1e-4
"""Spectra for the essentia frame loops come from one float32 FFT (not essentia's per-frame
FFT) and librosa parts use float32 BLAS: agreement ~1e-6; 1e-4 leaves room for a spectral
peak at the magnitude threshold or a rolloff bin flipping in one frame."""
ATOL = 1e-6
EXACT = (
    "tempo_bpm",
    "beat_interval_mean",
    "beat_interval_std",
    "beat_interval_cv",
    "bpm_first_peak",
    "bpm_first_weight",
    "bpm_first_spread",
    "bpm_second_peak",
    "bpm_second_weight",
    "bpm_second_spread",
    "bpm_peak_ratio",
    "bpm_histogram_entropy",
    "beats_loudness_mean",
    "beats_loudness_std",
    "beats_low_ratio",
    "beats_mid_ratio",
    "beats_high_ratio",
    "key_strength",
    "is_minor",
    "key_cos",
    "key_sin",
)
"""Same essentia algorithm on the same samples (or a tempogram argmax): bit-identical."""
SEED_NAMES = {
    "rhythm": [
        "tempo_bpm",
        "onset_strength_mean",
        "beat_interval_cv",
        "bpm_first_peak",
        "bpm_histogram_entropy",
        "rhythm_transform_entropy",
        "beats_high_ratio",
    ],
    "spectral": [
        "mfcc_1_mean",
        "mfcc_5_mean",
        "spectral_centroid_mean",
        "spectral_contrast_mean",
        "inharmonicity_mean",
    ],
    "tonal": [
        "chroma_entropy",
        "major_alignment",
        "hpcp_0",
        "hpcp_11",
        "hpcp_temporal_std",
        "key_strength",
        "is_minor",
        "key_cos",
        "key_sin",
    ],
}


def test_columns_keep_seed_names_and_groups():
    columns = soundspace_columns()
    assert len(columns) == 56 == len(set(columns))
    assert {g: len(n) for g, n in soundspace.GROUPS.items()} == {
        "rhythm": 23,
        "spectral": 10,
        "tonal": 23,
    }
    for group, names in SEED_NAMES.items():
        for name in names:
            assert name in soundspace.GROUPS[group]
            assert f"soundspace__{name}" in columns


@pytest.mark.parametrize("clip", ["blues.00000.wav", "classical.00001.wav", "reggae.00000.wav"])
def test_soundspace_matches_seed_reference(shared_data, clip):
    path = shared_data / "gtzan_mini" / clip
    seconds = 12.0
    # the seed's two decodes: 44.1 kHz (rhythm, tonal) and 22.05 kHz (spectral)
    y44 = load_audio(path, CFG.essentia_sample_rate)[: int(seconds * CFG.essentia_sample_rate)]
    y22 = load_audio(path, CFG.sample_rate)[: int(seconds * CFG.sample_rate)]
    fast = compute_soundspace(y44, CFG.essentia_sample_rate, CFG, y_spectral=y22)
    ref = soundspace_reference(y22, y44)
    assert list(fast) == soundspace_columns()
    assert mismatches(fast, ref, RTOL, ATOL, exact=EXACT) == []
    assert fast["soundspace__beats_loudness_mean"] > 0, "beats loudness must not be the seed's 0"


def test_registry_hands_soundspace_both_decodes(shared_data):
    from soundclust_ray.config import FeaturesConfig
    from soundclust_ray.features.registry import FAMILIES, compute_family, decode_rates

    features = FeaturesConfig(families=("timbre", "soundspace"))
    family = FAMILIES["soundspace"]
    assert decode_rates([FAMILIES["timbre"], family], features) == [22050, 44100]
    path = shared_data / "gtzan_mini" / "jazz.00000.wav"
    signals = {r: load_audio(path, r)[: 6 * r] for r in (22050, 44100)}
    via_registry = compute_family(family, signals, features)
    direct = compute_soundspace(signals[44100], 44100, CFG, y_spectral=signals[22050])
    assert via_registry == direct


def test_without_the_second_decode_a_44k_source_gives_the_same_values(tmp_path, shared_data):
    """The fallback resamples the 44.1 kHz decode: exactly the seed's 22.05 kHz decode when
    the source is at 44.1 kHz (22.05 kHz sources lose their top band, so the registry passes
    the real second decode)."""
    import soundfile as sf

    y, sr = sf.read(shared_data / "gtzan_mini" / "rock.00000.wav", dtype="float32")
    source = tmp_path / "rock_44k.wav"
    sf.write(source, resample(y[: 6 * sr], sr, 44100), 44100, subtype="FLOAT")
    y44, y22 = load_audio(source, 44100), load_audio(source, 22050)
    np.testing.assert_array_equal(resample(y44, 44100, 22050), y22)
    assert compute_soundspace(y44, 44100, CFG) == compute_soundspace(y44, 44100, CFG, y22)


def test_key_encoding_is_on_the_unit_circle(shared_data):
    y = load_audio(shared_data / "gtzan_mini" / "pop.00000.wav", 44100)[: 8 * 44100]
    values = compute_soundspace(y, 44100, CFG)
    assert values["soundspace__key_cos"] ** 2 + values["soundspace__key_sin"] ** 2 == (
        pytest.approx(1.0, abs=1e-6)
    )
    assert values["soundspace__is_minor"] in (0.0, 1.0)
    hpcp = [values[f"soundspace__hpcp_{i}"] for i in range(12)]
    assert sum(hpcp) == pytest.approx(1.0, abs=1e-3), "unitSum HPCP frames average to unit sum"


def test_essentia_algorithms_are_built_once():
    y = np.random.default_rng(1).standard_normal(3 * CFG.sample_rate).astype(np.float32) * 0.1
    compute_soundspace(y, CFG.sample_rate, CFG)
    before = soundspace._essentia.cache_info()
    compute_soundspace(y, CFG.sample_rate, CFG)
    after = soundspace._essentia.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1
