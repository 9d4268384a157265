"""End-to-end runs of the real pipeline on a local Ray: synthesized, bad and GTZAN clips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import BAD, GTZAN

from soundclust_ray import shards
from soundclust_ray.cli import main

pytestmark = pytest.mark.ray


def read_features(out) -> pd.DataFrame:
    return read_product(out, "features/timbre")


def read_product(out, product: str, *order: str) -> pd.DataFrame:
    tables = list(shards.iter_shard_tables(str(out), product))
    frame = pd.concat([t.to_pandas() for t in tables])
    return frame.sort_values(["track_id", *order]).reset_index(drop=True)


@pytest.fixture(scope="module")
def corpus_with_bad_files(synth_corpus, tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("corpus")
    shutil.copytree(synth_corpus, root, dirs_exist_ok=True)
    shutil.copy(BAD / "empty.wav", root / "empty.wav")
    shutil.copy(BAD / "random_bytes.mp3", root / "random_bytes.mp3")
    return root


@pytest.fixture(scope="module")
def synth_run(corpus_with_bad_files, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("out") / "run"
    args = ["run", str(corpus_with_bad_files), "--out", str(out), "--k", "3", "--quiet"]
    code = main([*args, "--embed", "none"])  # the features-only path; the default embeds too
    return code, out


def test_folder_run_writes_every_output_and_accounts_for_every_track(synth_run):
    code, out = synth_run
    assert code == 0
    clusters = pd.read_parquet(out / "clusters.parquet")
    errors = pd.read_parquet(out / "errors.parquet")
    assert len(clusters) == 12 and clusters["track_id"].is_unique
    assert sorted(errors["track_id"]) == ["empty.wav", "random_bytes.mp3"]
    assert set(clusters["track_id"]).isdisjoint(errors["track_id"])
    assert {"kmeans", "hdbscan", "umap_x", "umap_y"} <= set(clusters.columns)
    assert clusters["kmeans"].between(0, 2).all()
    assert (errors["stage"] == "features").all()
    assert errors.set_index("track_id").loc["empty.wav", "message"].startswith("empty file")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_tracks"] == 12 and metrics["n_failed"] == 2 and metrics["k"] == 3
    assert metrics["silhouette"] is not None


def test_shards_are_flat_float32_with_config_hash(synth_run):
    _, out = synth_run
    paths = shards.list_shards(str(out), "features/timbre")
    assert paths
    schema = pq.read_schema(paths[0])
    assert schema.field("track_id").type == "string"
    value_fields = [f for f in schema if f.name != "track_id"]
    assert len(value_fields) == 180
    assert all(f.name.startswith("timbre__") and str(f.type) == "float" for f in value_fields)
    assert shards.CONFIG_HASH_KEY in schema.metadata
    features = read_features(out)
    assert np.isfinite(features.drop(columns="track_id").to_numpy()).all()


def test_rerun_resumes_and_different_config_is_refused(synth_run, capsys):
    _, out = synth_run
    before = read_features(out)
    code = main(
        ["run", str(before_input(out)), "--out", str(out), "--no-analysis", "--embed", "none"]
    )
    assert code == 0
    assert "12 tracks already in" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_features(out), before)
    code = main(
        [
            "run",
            str(before_input(out)),
            "--out",
            str(out),
            "--no-analysis",
            "--quiet",
            "--features",
            "timbre",
            "--max-duration",
            "2",
            "--embed",
            "none",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "features/timbre" in err and "audio.max_duration_s 600.0 → 2.0" in err


def before_input(out) -> str:
    return json.loads((out / "run.json").read_text())["input"]


def test_error_rate_above_limit_exits_3(corpus_with_bad_files, tmp_path, ray_local):
    code = main(
        [
            "run",
            str(corpus_with_bad_files),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--no-analysis",
            "--max-error-rate",
            "0.1",
            "--embed",
            "none",
        ]
    )
    assert code == 3


def test_gtzan_manifest_with_labels(tmp_path, ray_local, shared_data):
    out = tmp_path / "gtzan"
    # Features only: the default command (with the musicnn embedding) is the module fixture's.
    args = ["run", str(GTZAN / "labels.csv"), "--out", str(out), "--label-col", "genre"]
    code = main([*args, "--embed", "none", "--quiet"])
    assert code == 0
    labels = pd.read_csv(GTZAN / "labels.csv")
    clusters = pd.read_parquet(out / "clusters.parquet")
    errors = pd.read_parquet(out / "errors.parquet")
    assert len(clusters) + len(errors) == len(labels)
    assert set(clusters["track_id"]) == set(labels["path"])
    assert (
        clusters.set_index("track_id").loc[labels["path"], "genre"].to_numpy()
        == labels["genre"].to_numpy()
    ).all()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("n_tracks", "n_failed", "k", "silhouette", "seconds_per_stage", "nmi", "ari"):
        assert key in metrics, key
    assert metrics["n_tracks"] == len(labels)
    assert {"pass", "kmeans", "hdbscan", "umap"} <= set(metrics["seconds_per_stage"])
    assert 0.0 <= metrics["nmi"] <= 1.0 and -1.0 <= metrics["ari"] <= 1.0


def test_model_in_cpu_actors_or_its_own_gives_the_same_shards(synth_corpus, tmp_path, ray_local):
    """musicnn in the pass's CPU actors (the CPU default) and in model actors of its own (the
    GPU and CLAP layout) write the same shards, classic chunks and errors included."""
    import dataclasses

    from soundclust_ray.config import EmbedConfig, FeaturesConfig, RunConfig
    from soundclust_ray.manifest import build_manifest
    from soundclust_ray.pipeline import run_pipeline

    manifest = build_manifest(str(synth_corpus), limit=4)
    base = dataclasses.replace(
        RunConfig(),
        embed=EmbedConfig(backends=("musicnn",)),
        features=FeaturesConfig(families=("timbre",), chunk_level=True),
    )
    side_by_side = run_pipeline(
        manifest,
        str(tmp_path / "a"),
        dataclasses.replace(base, separate_model_actors=True),
        progress=lambda _t: None,
    )
    in_turn = run_pipeline(
        manifest,
        str(tmp_path / "b"),
        dataclasses.replace(base, separate_model_actors=False),
        progress=lambda _t: None,
    )
    for info in (side_by_side, in_turn):
        assert {p: v["written"] for p, v in info["products"].items()} == {
            "features/timbre": 4,
            "features_chunks": 4,
            "embeddings/musicnn": 4,
        }
    pd.testing.assert_frame_equal(read_features(tmp_path / "a"), read_features(tmp_path / "b"))
    chunks = [read_product(tmp_path / o, "features_chunks", "chunk_index") for o in "ab"]
    pd.testing.assert_frame_equal(*chunks)
    emb = [read_product(tmp_path / o, "embeddings/musicnn") for o in "ab"]
    np.testing.assert_array_equal(np.stack(emb[0]["embedding"]), np.stack(emb[1]["embedding"]))
