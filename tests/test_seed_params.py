"""Config defaults against the seeds' literal values, and options that really reach the fits.

Each default in config.py names the seed it comes from; these tests read the seed's text, find
the literal there, and compare, so a changed default or a misread seed both fail.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from soundclust_ray.analysis import clustering, projection
from soundclust_ray.config import AnalysisConfig, MsdConfig, RunConfig, TabularConfig
from soundclust_ray.features.classic import classic_columns

SEEDS = SHARED_DATA.parent / "seeds"
CFG = RunConfig()
TIMBRE, CLASSIC = CFG.features.timbre, CFG.features.classic


def seed_text(number: str) -> str:
    [path] = sorted(Path(SEEDS).glob(f"{number}_*.txt"))
    return path.read_text(errors="replace")


def seed_literal(number: str, pattern: str) -> float:
    """The number captured by ``pattern`` in seed ``number`` (the test fails if it is absent)."""
    match = re.search(pattern, seed_text(number))
    assert match, f"seed {number} no longer contains {pattern!r}"
    return float(match.group(1))


LITERALS = [
    ("002", r"SAMPLE_RATE_TARGET\s*=\s*(\d+)", TIMBRE.sample_rate),
    ("002", r"N_MELS\s*=\s*(\d+)", TIMBRE.n_mels),
    ("002", r"N_MFCC\s*=\s*(\d+)", TIMBRE.n_mfcc),
    ("002", r"top_db=(\d+)", TIMBRE.trim_top_db),
    ("002", r"n_fft=(\d+)", TIMBRE.n_fft),
    ("002", r"hop_length=(\d+)", TIMBRE.hop_length),
    ("002", r"roll_percent=([\d.]+)", TIMBRE.rolloff_percent),
    ("002", r"MIN_CLUSTER_SIZE\s*=\s*(\d+)", AnalysisConfig().hdbscan_min_cluster_size),
    ("002", r"MIN_SAMPLES\s*=\s*(\d+)", AnalysisConfig().hdbscan_min_samples),
    ("002", r"n_neighbors=(\d+)", AnalysisConfig().umap_n_neighbors),
    ("002", r"min_dist=([\d.]+)", AnalysisConfig().umap_min_dist),
    ("002", r"n_init=(\d+)", AnalysisConfig().kmeans_n_init),
    ("002", r"random_state=(\d+)", AnalysisConfig().random_state),
    ("001", r"split into (\d+)-second chunks", CLASSIC.chunk_s),
    ("001", r"lower quantile \(e\.g\., (\d+)%\)", CLASSIC.chunk_quantile * 100),
    ("001", r"approximately \*\*(\d+) dimensions", len(classic_columns(CLASSIC))),
    ("004", r"def hist_feat\(x, bins=(\d+)\)", MsdConfig().hist_bins),
    ("004", r"build_cluster_oof_features\(X_stats, y, k=(\d+)", MsdConfig().oof_k),
    ("004", r"n_splits=(\d+)\)", MsdConfig().oof_splits),
    ("004", r"batch_size=(\d+)", MsdConfig().oof_batch_size),
]


@pytest.mark.parametrize(("seed", "pattern", "value"), LITERALS, ids=[p for _, p, _ in LITERALS])
def test_default_equals_seed_literal(seed, pattern, value):
    assert value == seed_literal(seed, pattern)


def test_msd_fields_are_the_seed_fields():
    fields = re.findall(r'read_from_filepaths\(directory, "(\w+)"\)', seed_text("004"))
    assert tuple(dict.fromkeys(fields)) == MsdConfig().fields


def test_tabular_features_weights_and_categoricals_are_seed_003():
    text = seed_text("003")
    block = re.search(r"audio_features = \[(.*?)\]", text, re.S).group(1)
    assert tuple(re.findall(r"'(\w+)'", block)) == TabularConfig().audio_features
    weights = re.search(r"weights = np\.array\(\[(.*?)\]", text, re.S).group(1)
    values = tuple(float(w) for w in re.findall(r"^\s*([\d.]+),?\s*#", weights, re.M))
    assert values == TabularConfig().weights
    cats = re.search(r"cat_cols = \[(.*?)\]", text).group(1)
    assert tuple(re.findall(r'"(\w+)"', cats)) == TabularConfig().categorical


def blobs(n_per: int = 40, centres: int = 4, seed: int = 0) -> np.ndarray:
    """Seeded Gaussian blobs of different widths, so HDBSCAN's parameters change its answer."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(6.0 * c, 0.3 + 0.4 * c, size=(n_per, 5)) for c in range(centres)]
    return np.vstack(parts).astype(np.float32)


class TestOptionsReachTheFit:
    def test_hdbscan_params_reach_the_estimator(self, monkeypatch):
        import hdbscan

        seen: list[dict] = []
        real_fit_predict = hdbscan.HDBSCAN.fit_predict

        def recording_fit_predict(self, X, *args, **kwargs):
            seen.append(self.get_params())
            return real_fit_predict(self, X, *args, **kwargs)

        monkeypatch.setattr(hdbscan.HDBSCAN, "fit_predict", recording_fit_predict)
        cfg = replace(AnalysisConfig(), hdbscan_min_cluster_size=7, hdbscan_min_samples=5)
        _, info = clustering.fit_hdbscan(blobs(), cfg)
        assert (seen[-1]["min_cluster_size"], seen[-1]["min_samples"]) == (7, 5)
        assert (info["min_cluster_size"], info["min_samples"]) == (7, 5)

    def test_hdbscan_params_change_the_labels(self):
        X = blobs()
        default, _ = clustering.fit_hdbscan(X, AnalysisConfig())
        coarse, _ = clustering.fit_hdbscan(
            X, replace(AnalysisConfig(), hdbscan_min_cluster_size=60, hdbscan_min_samples=30)
        )
        assert not np.array_equal(default, coarse)

    def test_kmeans_k(self):
        X = blobs()
        for k in (2, 5):
            labels, centres = clustering.fit_kmeans(X, k, AnalysisConfig())
            assert centres.shape == (k, X.shape[1]) and len(set(labels.tolist())) == k

    def test_umap_n_neighbors(self):
        X = blobs(n_per=25)
        a, info_a = projection.fit_umap_2d(X, replace(AnalysisConfig(), umap_n_neighbors=5))
        b, info_b = projection.fit_umap_2d(X, replace(AnalysisConfig(), umap_n_neighbors=30))
        assert (info_a["n_neighbors"], info_b["n_neighbors"]) == (5, 30)
        assert a.shape == b.shape == (X.shape[0], 2)
        assert not np.allclose(a, b)
