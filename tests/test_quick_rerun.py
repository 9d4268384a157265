"""A rerun with nothing new starts no Ray and re-analyses only what changed."""

from __future__ import annotations

import pytest
import soundfile as sf
from conftest import tone
from helpers import soundclust_probed

from soundclust_ray.cli import main

pytestmark = pytest.mark.ray


def test_a_rerun_with_nothing_new_skips_ray_and_the_analysis(tmp_path, ray_local):
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(6):
        sf.write(clips / f"c{i}.wav", tone(200 + 150 * i, 3.0, 22050, noise=0.05, seed=i), 22050)
    out = tmp_path / "out"
    base = ["run", str(clips), "--out", str(out), "--features", "timbre", "--embed", "none"]
    assert main([*base, "--k", "2", "--quiet"]) == 0  # the first run, on the session's Ray

    again = soundclust_probed([*base, "--k", "2"])
    assert "nothing left to compute" in again and "is current" in again
    assert "ray imported: False" in again

    other_k = soundclust_probed([*base, "--k", "3"])
    assert "nothing left to compute" in other_k and "is current" not in other_k
    assert "k = 3" in other_k and "ray imported: False" in other_k

    (clips / "c0.wav").unlink()
    shrunk = soundclust_probed([*base, "--k", "3"])
    assert "1 tracks no longer in the input" in shrunk and "is current" not in shrunk
    assert "tracks clustered: 5" in shrunk
