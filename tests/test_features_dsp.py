"""The shared spectral blocks against the librosa functions they replace, on real audio."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from soundclust_ray.audio import load_audio
from soundclust_ray.features import dsp

CLIPS = ["pop.00000.wav", "metal.00003.wav"]


@pytest.fixture(scope="module", params=CLIPS)
def signal(request, shared_data):
    return load_audio(shared_data / "gtzan_mini" / request.param, 22050)


def test_stft_matches_librosa_for_one_signal_and_a_stack(signal):
    ours = dsp.stft_magnitude(signal, 2048, 512)
    theirs = np.abs(librosa.stft(signal, n_fft=2048, hop_length=512))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * theirs.max())
    stack = np.stack([signal[:50000], signal[50000:100000]])
    np.testing.assert_array_equal(
        dsp.stft_magnitude(stack, 2048, 512)[1], dsp.stft_magnitude(stack[1], 2048, 512)
    )


def test_rolloff_and_tuning_are_librosas_on_the_same_spectrogram(signal):
    mag = dsp.stft_magnitude(signal, 2048, 512)
    np.testing.assert_array_equal(
        dsp.rolloff(mag, 22050, 0.85), librosa.feature.spectral_rolloff(S=mag, sr=22050)[0]
    )
    power = mag**2
    assert dsp.estimate_tuning(power, 22050) == librosa.estimate_tuning(S=power, sr=22050)
    # one float32 BLAS product instead of einsum: the sums round differently (~2e-6)
    np.testing.assert_allclose(
        dsp.chroma(power, 22050),
        librosa.feature.chroma_stft(S=power, sr=22050),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("sr", [22050, 44100])
def test_tempo_equals_librosa_on_tracks_and_chunks(shared_data, sr):
    y = load_audio(shared_data / "gtzan_mini" / "pop.00000.wav", sr)
    mel = dsp.power_to_db(dsp.mel_power(dsp.stft_magnitude(y, 2048, 512) ** 2, sr, 128), False)
    env = librosa.onset.onset_strength(S=mel, sr=sr, aggregate=np.median)
    step = int(5 * sr / 512)
    for part in [env] + [env[i : i + step] for i in range(0, env.size - step, step)]:
        expected = float(librosa.feature.tempo(onset_envelope=part, sr=sr)[0])
        assert dsp.tempo(part, sr, 512) == expected
    assert dsp.tempo(np.zeros(300, np.float32), sr, 512) == 0.0


@pytest.mark.parametrize("top_db", [30.0, 60.0])
def test_trim_bounds_equal_librosa_trim(signal, top_db):
    rng = np.random.default_rng(3)
    burst = np.zeros(3 * 22050, np.float32)
    burst[20000:31000] = 0.2 * rng.standard_normal(11000).astype(np.float32)
    for y in (signal, burst, np.zeros(4000, np.float32)):
        level = dsp.rms(y, 2048, 512)
        np.testing.assert_array_equal(level, librosa.feature.rms(y=y)[0])
        _, expected = librosa.effects.trim(y, top_db=top_db)
        assert dsp.trim_bounds(level, top_db, 512, y.size) == tuple(expected)
