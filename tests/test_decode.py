"""Decoding real files of every supported container, and clear errors for bad ones."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import BAD, GTZAN, tone

from soundclust_ray.audio import AudioDecodeError, load_audio, read_audio


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "aiff"])
@pytest.mark.parametrize("sr", [8000, 44100, 96000])
def test_containers_and_rates_decode_to_the_same_signal(tmp_path, ext, sr):
    y = tone(440, 1.0, sr)
    path = tmp_path / f"t.{ext}"
    sf.write(path, y, sr)
    out = load_audio(path, 22050)
    assert out.dtype == np.float32
    assert abs(len(out) - 22050) <= 1
    assert np.corrcoef(out[1000:-1000], tone(440, 1.0, 22050)[1000:-1000])[0, 1] > 0.99


def test_stereo_is_downmixed_and_pyav_reads_mp3(tmp_path):
    stereo = np.stack([tone(220, 1.0, 22050), tone(220, 1.0, 22050)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 22050)
    y, sr = read_audio(tmp_path / "s.wav")
    assert y.ndim == 1 and sr == 22050
    import av

    with av.open(str(tmp_path / "t.mp3"), "w") as out:
        stream = out.add_stream("mp3", rate=22050)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            tone(220, 1.0, 22050)[None, :], format="flt", layout="mono"
        )
        frame.sample_rate = 22050
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    y, sr = read_audio(tmp_path / "t.mp3")
    assert sr == 22050 and 0.9 < len(y) / sr < 1.2


def test_max_duration_bounds_what_is_read(shared_data):
    y, sr = read_audio(GTZAN / "blues.00000.wav", max_duration_s=2.0)
    assert len(y) == 2 * sr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.wav", "empty file"),
        ("random_bytes.mp3", "not a decodable audio file"),
        ("text.flac", "not a decodable audio file"),
        ("nan_samples.wav", "NaN"),
        ("too_short_0.2s.wav", "too short"),
    ],
)
def test_bad_files_raise_clear_errors(shared_data, name, message):
    with pytest.raises(AudioDecodeError, match=message):
        load_audio(BAD / name, 22050, min_duration_s=0.5)


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(AudioDecodeError, match="not found"):
        load_audio(tmp_path / "nope.wav", 22050)
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(AudioDecodeError, match="directory"):
        load_audio(tmp_path / "d.wav", 22050)


def _encode_opus(y: np.ndarray, path) -> None:
    import av

    with av.open(str(path), "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(y[None, :], format="flt", layout="mono")
        frame.sample_rate = 48000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_each_codec_tries_its_faster_decoder_first_and_a_lying_extension_still_decodes(tmp_path):
    from soundclust_ray.config import decoders_for

    assert decoders_for(".OPUS") == ("pyav", "soundfile")
    assert decoders_for(".mp3") == ("soundfile", "pyav")
    assert decoders_for(".xyz") == ("soundfile", "pyav")
    _encode_opus(tone(440, 1.0, 48000), tmp_path / "t.opus")
    y, sr = read_audio(tmp_path / "t.opus")
    assert sr == 48000 and 0.95 < len(y) / sr < 1.1
    sf.write(tmp_path / "wav_inside.opus", tone(440, 1.0, 22050), 22050, format="WAV")
    y, sr = read_audio(tmp_path / "wav_inside.opus")  # PyAV first; soundfile reads it too
    assert sr == 22050 and len(y) == 22050
    (tmp_path / "junk.m4a").write_bytes(b"\x00junk" * 100)
    with pytest.raises(AudioDecodeError, match="not a decodable audio file"):
        read_audio(tmp_path / "junk.m4a")
