"""Manifests as people have them: seed 000's ``song_id``/``audio_path`` with absolute paths."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import GTZAN, SHARED_DATA

from soundclust_ray.cli import build_parser, run_options
from soundclust_ray.manifest import ManifestError, build_manifest


def seed000_manifest(tmp_path):
    """A manifest laid out like seed 000's merge csv: integer ids, absolute audio paths."""
    (tmp_path / "audio").mkdir()
    paths = [tmp_path / "audio" / f"{i}.mp3" for i in (7, 12)]
    for p in paths:
        p.write_bytes(b"x")
    df = pd.DataFrame(
        {"Unnamed: 0": [0, 1], "song_id": [7, 12], "quadrant": ["Q1", "Q3"]}
        | {"audio_path": [str(p) for p in paths]}
    )
    df.to_csv(tmp_path / "merge.csv", index=False)
    return tmp_path / "merge.csv", paths


def test_id_and_path_columns_named_by_the_user(tmp_path):
    manifest, paths = seed000_manifest(tmp_path)
    m = build_manifest(str(manifest), id_col="song_id", path_col="audio_path")
    assert m["track_id"].tolist() == ["7", "12"]
    assert m["path"].tolist() == [str(p) for p in paths]
    assert m["invalid_reason"].tolist() == ["", ""]
    assert m["quadrant"].tolist() == ["Q1", "Q3"]


def test_without_the_options_the_seed_manifest_is_a_clear_error(tmp_path):
    manifest, _ = seed000_manifest(tmp_path)
    with pytest.raises(ManifestError, match="no 'path' column"):
        build_manifest(str(manifest))


def test_unknown_or_conflicting_column_is_a_user_error(tmp_path):
    manifest, _ = seed000_manifest(tmp_path)
    with pytest.raises(ManifestError, match="--path-col 'file' is not a manifest column"):
        build_manifest(str(manifest), path_col="file")
    with pytest.raises(ManifestError, match="already has a 'track_id'"):
        pd.read_csv(manifest).assign(track_id=[1, 2]).to_csv(manifest, index=False)
        build_manifest(str(manifest), id_col="song_id", path_col="audio_path")


def test_run_cli_carries_the_columns(tmp_path):
    args = build_parser().parse_args(
        ["run", "m.csv", "--out", str(tmp_path / "o"), "--id-col", "song_id"]
        + ["--path-col", "audio_path"]
    )
    opts = run_options("m.csv", args)
    assert (opts.id_col, opts.path_col) == ("song_id", "audio_path")


def test_header_columns_recorded_for_valid_rows_only(tmp_path):
    from soundclust_ray.audio.probe import HEADER_COLUMNS, add_header_columns

    wav = str(GTZAN / "blues.00000.wav")
    mp3 = str(SHARED_DATA / "mer4q_genre" / "audio" / "Blues" / "MT0000044741.mp3")
    manifest = pd.DataFrame({"path": [wav, mp3, str(tmp_path / "gone.mp3")]})
    add_header_columns(manifest, [True, True, False])
    rows = manifest[list(HEADER_COLUMNS)].to_numpy()
    assert rows[0] == pytest.approx([661794 / 22050, 22050, 1])
    assert rows[1, 1:].tolist() == [32000, 2] and 29 < rows[1, 0] < 31
    assert pd.isna(rows[2]).all()


def test_users_own_duration_column_is_kept():
    from soundclust_ray.audio.probe import add_header_columns

    manifest = pd.DataFrame({"path": [str(GTZAN / "blues.00000.wav")], "duration_sec": [12.5]})
    add_header_columns(manifest, [True])
    assert manifest["duration_sec"].tolist() == [12.5]
    assert manifest["sample_rate"].tolist() == [22050]


@pytest.mark.ray
def test_seed000_manifest_runs_and_clusters_carry_header_facts(tmp_path, ray_local, shared_data):
    from conftest import GTZAN

    from soundclust_ray.cli import main

    wavs = sorted(GTZAN.glob("*.wav"))[:6]
    manifest = tmp_path / "merge.csv"
    pd.DataFrame(
        {"song_id": range(100, 106), "audio_path": [str(p.resolve()) for p in wavs]}
    ).to_csv(manifest, index=False)
    out = tmp_path / "out"
    argv = ["run", str(manifest), "--out", str(out), "--id-col", "song_id"]
    argv += ["--path-col", "audio_path", "--allow-outside-root", "--embed", "none"]
    assert main(argv + ["--features", "timbre", "--k", "2", "--quiet"]) == 0
    clusters = pd.read_parquet(out / "clusters.parquet").sort_values("track_id")
    assert clusters["track_id"].tolist() == [str(i) for i in range(100, 106)]
    assert (clusters["sample_rate"] == 22050).all() and (clusters["channels"] == 1).all()
    assert clusters["duration_sec"].between(29, 31).all()
    summaries = json.loads((out / "cluster_summaries.json").read_text())
    for entry in summaries["kmeans"]:
        low, high = entry["numeric_min"]["duration_sec"], entry["numeric_max"]["duration_sec"]
        assert 29 <= low <= entry["numeric_means"]["duration_sec"] <= high <= 31
        assert entry["numeric_min"]["sample_rate"] == entry["numeric_max"]["sample_rate"] == 22050
    assert "duration_sec: " in (out / "report.html").read_text()
