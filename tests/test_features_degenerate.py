"""Every family on degenerate audio: finite values or a per-track TrackError, never NaN."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from soundclust_ray.audio import load_audio
from soundclust_ray.audio.decode import resample
from soundclust_ray.audio.errors import AudioDecodeError, TrackError
from soundclust_ray.config import FeaturesConfig
from soundclust_ray.features.registry import FAMILIES, feature_columns, get_families

CFG = FeaturesConfig(families=("timbre", "classic", "soundspace"))
NAMES = sorted(FAMILIES)


def _finite_or_track_error(family, y: np.ndarray) -> None:
    sr = family.sample_rate(CFG)
    try:
        values = family.compute(y, sr, CFG)
    except TrackError:
        return
    assert list(values) == family.columns(CFG)
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    assert bad == []


def test_registry_lists_three_families_with_their_widths():
    assert set(NAMES) == {"timbre", "classic", "soundspace"}
    widths = {f.name: len(f.columns(CFG)) for f in get_families(NAMES)}
    assert widths == {"timbre": 180, "classic": 33, "soundspace": 56}
    columns = feature_columns(CFG)
    assert len(columns) == len(set(columns)) == 269
    assert all(c.split("__")[0] in NAMES for c in columns)
    with pytest.raises(ValueError, match="known: classic, soundspace, timbre"):
        get_families(["timbre", "spectral"])


@pytest.mark.parametrize("name", NAMES)
def test_silence_file(shared_data, name):
    family = FAMILIES[name]
    y = load_audio(shared_data / "bad" / "silence_10s.wav", family.sample_rate(CFG))
    _finite_or_track_error(family, y)


@pytest.mark.parametrize("name", NAMES)
def test_very_short_signal(shared_data, name):
    family = FAMILIES[name]
    path = shared_data / "bad" / "too_short_0.2s.wav"
    with pytest.raises(AudioDecodeError):
        load_audio(path, family.sample_rate(CFG), min_duration_s=0.5)
    _finite_or_track_error(family, load_audio(path, family.sample_rate(CFG)))
    _finite_or_track_error(family, np.zeros(1, np.float32))


@pytest.mark.parametrize("name", NAMES)
def test_nan_samples_never_reach_the_columns(shared_data, name):
    family = FAMILIES[name]
    with pytest.raises(AudioDecodeError):
        load_audio(shared_data / "bad" / "nan_samples.wav", family.sample_rate(CFG))
    y = np.full(family.sample_rate(CFG), 0.1, np.float32)
    y[100] = np.nan
    with pytest.raises(TrackError):
        family.compute(y, family.sample_rate(CFG), CFG)


@pytest.fixture(scope="module")
def resampled_sources(tmp_path_factory, shared_data):
    """A real clip (6 s) written as stereo files at 8, 44.1 and 96 kHz."""
    root = tmp_path_factory.mktemp("rates")
    y, sr = sf.read(shared_data / "gtzan_mini" / "metal.00000.wav", dtype="float32")
    y = y[: 6 * sr]
    paths = {}
    for rate in (8000, 44100, 96000):
        mono = resample(y, sr, rate)
        stereo = np.stack([mono, 0.5 * mono], axis=1)
        paths[rate] = root / f"clip_{rate}.wav"
        sf.write(paths[rate], stereo, rate, subtype="FLOAT")
    return paths


@pytest.mark.parametrize("rate", [8000, 44100, 96000])
@pytest.mark.parametrize("name", NAMES)
def test_stereo_sources_at_any_rate(resampled_sources, name, rate):
    family = FAMILIES[name]
    y = load_audio(resampled_sources[rate], family.sample_rate(CFG))
    assert y.ndim == 1
    values = family.compute(y, family.sample_rate(CFG), CFG)
    assert np.isfinite(list(values.values())).all()
