"""Seed 002's UMAP parameters on the CLI, defaulting to AnalysisConfig's."""

from __future__ import annotations

from soundclust_ray.cli import analysis_config, build_parser
from soundclust_ray.config import AnalysisConfig


def test_umap_options_reach_the_analysis_config():
    args = build_parser().parse_args(
        ["analyze", "OUT", "--umap-neighbors", "25", "--umap-min-dist", "0.3"]
    )
    cfg = analysis_config(args)
    assert (cfg.umap_n_neighbors, cfg.umap_min_dist) == (25, 0.3)


def test_umap_defaults_are_the_configs():
    cfg = analysis_config(build_parser().parse_args(["analyze", "OUT"]))
    d = AnalysisConfig()
    assert (cfg.umap_n_neighbors, cfg.umap_min_dist) == (d.umap_n_neighbors, d.umap_min_dist)
