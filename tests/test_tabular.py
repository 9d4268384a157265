"""Tabular source: seed 003's vectors exactly, optional/required columns, run outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.preprocessing import StandardScaler

from soundclust_ray import shards
from soundclust_ray.config import RunConfig, TabularConfig
from soundclust_ray.sources.tabular import run_tabular, tabular_vectors

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not (DATA / "tabular").is_dir():
    DATA = Path("/work/shared/data")
ARTISTS = DATA / "tabular" / "spotify_artists_audio_features.csv"
pytestmark = pytest.mark.skipif(not ARTISTS.is_file(), reason="shared tabular sample not found")

AUDIO = list(TabularConfig().audio_features)
WEIGHTS = list(TabularConfig().weights)


def seed_vectors(
    spotify, audio_features=AUDIO, weights=WEIGHTS, cat_cols=("key", "mode", "explicit")
):
    """Seed 003's cells, verbatim apart from parameterised column lists."""
    scaler = StandardScaler()
    Z = scaler.fit_transform(spotify[list(audio_features)]).astype("float32")
    Z_weighted = Z * np.array(weights, dtype="float32")
    blocks = [Z_weighted]
    if cat_cols:
        blocks.append(spotify[list(cat_cols)].astype("float32").values)
    if "year" in spotify.columns:
        blocks.append(StandardScaler().fit_transform(spotify[["year"]]).astype("float32"))
    return np.concatenate(blocks, axis=1).astype("float32")


@pytest.fixture(scope="module")
def artists() -> pd.DataFrame:
    return pd.read_csv(ARTISTS)


@pytest.fixture(scope="module")
def tracks(artists) -> pd.DataFrame:
    """A track-level table with every seed column: the sample plus id, explicit and year."""
    rng = np.random.default_rng(0)
    df = artists.head(3000).copy()
    df["id"] = [f"trk{i:06d}" for i in range(len(df))]
    df["explicit"] = rng.random(len(df)) < 0.2
    df["year"] = rng.integers(1921, 2021, len(df))
    return df


def test_full_seed_columns_identical(tracks):
    ids, X, report = tabular_vectors(tracks, TabularConfig())
    assert X.dtype == np.float32 and X.shape == (len(tracks), 14)
    np.testing.assert_array_equal(X, seed_vectors(tracks))
    assert list(ids[:2]) == ["trk000000", "trk000001"]
    assert report["missing_optional"] == [] and report["id_column"] == "id"


def test_artists_table_without_explicit_and_year(artists):
    ids, X, report = tabular_vectors(artists, RunConfig())
    assert X.shape == (len(artists), 12)
    np.testing.assert_array_equal(X, seed_vectors(artists, cat_cols=("key", "mode")))
    assert report["id_column"] == "artists" and ids[0] == artists["artists"].iloc[0]
    assert report["missing_optional"] == ["explicit", "year"]


def test_missing_optional_feature_keeps_weights_aligned(tracks):
    dropped = tracks.drop(columns=["liveness", "valence"])
    _, X, report = tabular_vectors(dropped, TabularConfig())
    keep = [i for i, c in enumerate(AUDIO) if c not in ("liveness", "valence")]
    ref = seed_vectors(dropped, [AUDIO[i] for i in keep], [WEIGHTS[i] for i in keep])
    np.testing.assert_array_equal(X, ref)
    assert report["missing_optional"] == ["valence", "liveness"]
    assert report["weights"][2] == 1.0 and len(report["weights"]) == 8


def test_year_from_release_date(tracks):
    dated = tracks.drop(columns=["year"]).assign(
        release_date=[
            f"{y}-05-0{i % 9 + 1}" if i % 3 else str(y) for i, y in enumerate(tracks.year)
        ]
    )
    _, X, report = tabular_vectors(dated, TabularConfig())
    assert report["year_from"] == "release_date"
    np.testing.assert_array_equal(X, seed_vectors(tracks))


def test_missing_values_become_column_mean(tracks):
    holed = tracks.copy()
    holed.loc[5, "energy"] = np.nan
    _, X, report = tabular_vectors(holed, TabularConfig())
    assert report["missing_values_filled"] == 1
    assert np.isfinite(X).all() and X[5, 1] == 0.0


def test_required_columns_errors(tracks):
    with pytest.raises(ValueError, match="no id column"):
        tabular_vectors(tracks.drop(columns=["id", "artists"]), TabularConfig())
    with pytest.raises(ValueError, match="none of the audio feature columns"):
        tabular_vectors(tracks.drop(columns=AUDIO), TabularConfig())
    with pytest.raises(ValueError, match="required column.*genre_top"):
        tabular_vectors(tracks, TabularConfig(required_columns=("genre_top",)))


def test_run_on_real_csv(tmp_path, artists):
    out = tmp_path / "out"
    counts = run_tabular(str(ARTISTS), str(out), RunConfig(tabular=TabularConfig(shard_rows=10000)))
    assert counts["rows"] == len(artists) and counts["dims"] == 12 and counts["parts"] == 3
    assert counts["duplicate_ids"] == 0
    manifest = pq.read_table(out / "manifest.parquet").to_pandas()
    assert list(manifest.columns[:2]) == ["track_id", "path"] and "genres" in manifest.columns
    assert manifest["track_id"].tolist() == artists["artists"].tolist()
    tables = list(shards.iter_shard_tables(str(out), "embeddings/tabular"))
    assert [t.num_rows for t in tables] == [10000, 10000, len(artists) - 20000]
    X = np.vstack([shards.embedding_matrix(t.column("embedding")) for t in tables])
    np.testing.assert_array_equal(X, seed_vectors(artists, cat_cols=("key", "mode")))
    mapping = json.loads((out / "id_to_index.json").read_text())
    assert len(mapping) == len(artists) and mapping[artists["artists"].iloc[123]] == 123


def test_run_on_parquet_replaces_parts(tmp_path, tracks):
    src = tmp_path / "tracks.parquet"
    tracks.to_parquet(src)
    out = tmp_path / "out"
    run_tabular(str(src), str(out), RunConfig(tabular=TabularConfig(shard_rows=1000)))
    run_tabular(str(src), str(out), RunConfig())
    assert len(shards.list_shards(str(out), "embeddings/tabular")) == 1
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert "year" in manifest.columns and "explicit" not in manifest.columns
    with pytest.raises(ValueError, match="expected a .csv"):
        run_tabular(str(tmp_path / "table.xlsx"), str(out), RunConfig())


def test_a_repeated_id_is_renamed_so_every_row_is_one_track(tracks):
    table = tracks.copy()
    first = table["id"].iloc[0]
    table.loc[table.index[1], "id"] = first
    table.loc[table.index[2], "id"] = f"{first}#dup1"  # a real id the rename must not take
    ids, X, report = tabular_vectors(table, TabularConfig())
    assert report["duplicate_ids"] == 1 and len(set(ids)) == len(ids) == len(X)
    assert ids[0] == first and ids[1] == f"{first}#dup2" and ids[2] == f"{first}#dup1"
