"""What a run overlaps to save its fixed costs (issue #17): imports while Ray starts, Ray's
shutdown while a small analysis runs. Same outputs, and no Ray left behind."""

from __future__ import annotations

import re
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
from conftest import tone
from helpers import soundclust_probed

from soundclust_ray.audio.decode import _mono
from soundclust_ray.run import loading_meanwhile

SR = 22050


def test_a_run_that_started_ray_stops_it_before_it_returns_and_still_analyses(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(4):
        sf.write(clips / f"t{i}.wav", tone(300.0 * (i + 1), 2.0, SR, noise=0.05, seed=i), SR)
    out = tmp_path / "out"
    args = ["run", str(clips), "--out", str(out), "--features", "timbre", "--embed", "none"]
    text = soundclust_probed([*args, "--k", "2", "--quiet"])
    assert "ray imported: True" in text and "ray started: False" in text
    assert (out / "clusters.parquet").exists() and (out / "metrics.json").exists()
    assert (out / "logs" / "ray-driver.log").exists()
    total = re.search(r"total time ([\d.]+) s", text)
    assert total and float(total[1]) < 300, text  # the run's own clock, not the machine's uptime


def test_loaders_run_beside_the_block_and_a_failing_one_costs_nothing():
    seen, inside = [], threading.Event()

    def failing() -> None:
        raise ImportError("no such module")

    with loading_meanwhile(failing, lambda: seen.append(inside.wait(5))):
        inside.set()
    assert seen == [True]


def test_the_run_imports_its_stage_modules_while_ray_starts():
    from soundclust_ray.config import RunConfig
    from soundclust_ray.sources import get_source

    modules = get_source("audio").stage_modules(RunConfig())
    assert "soundclust_ray.stages.features" in modules
    with loading_meanwhile(*[lambda m=m: __import__(m) for m in modules]):
        pass
    assert all(m in sys.modules for m in modules)


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_downmix_is_bit_identical_to_the_channel_mean(channels):
    frames = np.random.default_rng(channels).standard_normal((44_101, channels)).astype(np.float32)
    mono = _mono(frames)
    assert mono.dtype == np.float32 and mono.shape == (44_101,)
    assert np.array_equal(mono, frames.mean(axis=1, dtype=np.float32))
