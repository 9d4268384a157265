"""Decoding, resampling and windowing of audio signals."""

from soundclust_ray.audio.decode import load_audio, load_audio_rates, read_audio, resample
from soundclust_ray.audio.errors import AudioDecodeError, TrackError

__all__ = [
    "AudioDecodeError",
    "TrackError",
    "load_audio",
    "load_audio_rates",
    "read_audio",
    "resample",
]
