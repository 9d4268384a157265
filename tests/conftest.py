"""Shared fixtures: real sample data paths, synthesized clips, one local Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SOUNDCLUST_SHARED_DATA", REPO.parent / "shared" / "data"))
GTZAN = SHARED_DATA / "gtzan_mini"
BAD = SHARED_DATA / "bad"
MSD = SHARED_DATA / "msd"
TABULAR = SHARED_DATA / "tabular"


def pytest_collection_modifyitems(config, items):
    """Skip tests that need shared/data when it is not beside the checkout."""
    if SHARED_DATA.exists():
        return
    skip = pytest.mark.skip(reason=f"shared sample data not found at {SHARED_DATA}")
    for item in items:
        if "shared_data" in item.fixturenames:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def compiled_jit_caches():
    """Compile librosa's numba kernels once, under the cross-process lock, before any test.

    Ray workers started by the tests compile the same kernels; see features/jit_cache.py.
    The oracles in tests/oracles/ compile theirs in this process alone, on first use.
    """
    from soundclust_ray.features.jit_cache import warm_jit_caches

    warm_jit_caches()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


def tone(freq: float, seconds: float, sr: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A sine (plus optional seeded noise) as float32: the simplest real audio a test can make."""
    t = np.arange(int(seconds * sr)) / sr
    y = 0.5 * np.sin(2 * np.pi * freq * t)
    if noise:
        y += noise * np.random.default_rng(seed).standard_normal(len(t))
    return y.astype(np.float32)


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """12 short synthesized clips in 3 'styles' (low tone, high tone, noise) as wav/flac/ogg."""
    root = tmp_path_factory.mktemp("synth")
    sr = 22050
    kinds = {"low": (110.0, 0.0), "high": (1760.0, 0.0), "noise": (440.0, 0.8)}
    exts = ["wav", "flac", "ogg", "WAV"]
    for k, (freq, noise) in kinds.items():
        (root / k).mkdir()
        for i in range(4):
            y = tone(freq * (1 + 0.02 * i), 3.0 + 0.5 * i, sr, noise=noise, seed=i)
            sf.write(root / k / f"{k}_{i}.{exts[i]}", y, sr)
    return root


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray (2 CPUs) for every test that needs it; shut down at the end."""
    import ray

    from soundclust_ray.ray_env import configure_data_context

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    configure_data_context(verbose=False)
    yield ray
    ray.shutdown()
