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


# --- seed parameters on the CLI (issue 16 item 9): in --help under their group, reaching the fits


def run_parser():
    import argparse

    from soundclust_ray.cli import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, sub.choices["run"]


SEED_OPTIONS = {
    "--padding-threshold": "features",
    "--chunk-quantile": "features",
    "--msd-k": "features",
    "--msd-fields": "features",
    "--tabular-weights": "features",
    "--column": "input & output",
    "--umap-neighbors": "analysis",
    "--umap-min-dist": "analysis",
}


def test_seed_options_are_in_help_under_their_group():
    _, run = run_parser()
    group_of = {
        o: g.title for g in run._action_groups for a in g._group_actions for o in a.option_strings
    }
    assert {o: group_of.get(o) for o in SEED_OPTIONS} == SEED_OPTIONS
    text = run.format_help()
    assert all(o in text for o in SEED_OPTIONS)


def parsed_run_config(*options: str) -> RunConfig:
    from soundclust_ray.cli import run_config

    parser, _ = run_parser()
    return run_config(parser.parse_args(["run", "IN", "--out", "OUT", *options]))


def test_seed_option_defaults_are_the_configs():
    cfg = parsed_run_config()
    assert cfg.features.classic == CLASSIC and cfg.msd == MsdConfig()
    assert cfg.tabular == TabularConfig() and cfg.embed.clap == CFG.embed.clap


def test_padding_threshold_and_chunk_quantile_reach_the_chunking():
    from soundclust_ray.features.classic import classic_chunk_cap, count_chunks

    cfg = parsed_run_config("--padding-threshold", "0.7", "--chunk-quantile", "0.75")
    classic = cfg.features.classic
    assert (classic.padding_threshold, classic.chunk_quantile) == (0.7, 0.75)
    assert cfg.embed.clap.min_last_window == 0.7  # seed 001: one threshold for both strategies
    sixty_percent = int(0.6 * CLASSIC.chunk_s * CLASSIC.sample_rate)
    assert (count_chunks(sixty_percent, CLASSIC), count_chunks(sixty_percent, classic)) == (1, 0)
    durations = [5.0, 10.0, 20.0, 40.0]
    assert classic_chunk_cap(durations, CLASSIC) < classic_chunk_cap(durations, classic)


def test_msd_k_and_fields_reach_the_out_of_fold_clustering():
    import pandas as pd

    from soundclust_ray.sources.msd_h5 import field_columns
    from soundclust_ray.sources.msd_post import msd_oof_tables

    cfg = parsed_run_config("--msd-k", "3", "--msd-fields", "tatums_confidence")
    assert cfg.msd.fields == ("tatums_confidence",)
    rng = np.random.default_rng(0)
    columns = field_columns("tatums_confidence", cfg.msd.hist_bins)
    frame = pd.DataFrame(rng.normal(size=(12, len(columns))), columns=columns)
    frame.insert(0, "track_id", [f"t{i:02d}" for i in range(12)])
    [(field, table)] = msd_oof_tables(frame, cfg).items()  # the default k would clamp to 9
    assert field == "tatums_confidence" and table.attrs["k"] == 3 and table["label"].max() <= 2


def test_tabular_weights_and_columns_reach_the_vectors():
    import pandas as pd

    from soundclust_ray.sources.tabular import tabular_vectors

    rng = np.random.default_rng(1)
    table = pd.DataFrame(
        {"id": list("abcdef"), "danceability": rng.random(6), "energy": rng.random(6)}
    )
    table["artist_popularity"] = rng.integers(0, 100, 6)
    _, plain, plain_report = tabular_vectors(table, TabularConfig())
    cfg = parsed_run_config(
        "--tabular-weights", "danceability=3", "--column", "popularity=artist_popularity"
    )
    _, X, report = tabular_vectors(table, cfg.tabular)
    assert plain_report["columns"] == ["danceability", "energy"]
    assert report["columns"] == ["danceability", "energy", "popularity"]
    assert report["renamed_columns"] == {"artist_popularity": "popularity"}
    np.testing.assert_allclose(X[:, 0], plain[:, 0] * 3 / TabularConfig().weights[0], rtol=1e-6)
    np.testing.assert_array_equal(X[:, 1], plain[:, 1])
