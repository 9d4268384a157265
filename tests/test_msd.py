"""MSD HDF5 source: seed 004's statistics, metadata, error rows, manifest, per-field OOF."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import kurtosis, skew
from threadpoolctl import threadpool_limits

from soundclust_ray.config import MsdConfig, RunConfig
from soundclust_ray.sources.msd_h5 import (
    MsdTrackError,
    iter_msd_paths,
    msd_columns,
    msd_field_stats,
    read_msd_track,
    stat_names,
    write_msd_manifest,
)
from soundclust_ray.sources.msd_post import msd_oof_tables, write_msd_oof
from soundclust_ray.stages.msd import MsdStage

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not (DATA / "msd").is_dir():
    DATA = Path("/work/shared/data")
MSD_FILES = sorted(str(p) for p in (DATA / "msd").glob("*.h5"))
NOT_MSD = str(DATA / "bad" / "not_msd.h5")
pytestmark = pytest.mark.skipif(not MSD_FILES, reason="shared MSD sample files not found")


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Tiny k-means fits: OpenMP thread start-up dominates and crawls on a shared, loaded host."""
    with threadpool_limits(1):
        yield


def seed_seq_stats(x):
    x = np.asarray(x)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.array([np.nan] * 10)
    q10, q50, q90 = np.percentile(x, [10, 50, 90])
    iqr = np.percentile(x, 75) - np.percentile(x, 25)
    cv = np.std(x) / (np.mean(x) + 1e-8)
    return np.array([np.mean(x), np.std(x), iqr, cv, skew(x), kurtosis(x), q10, q50, q90, len(x)])


def seed_hist_feat(x, bins=20):
    if len(x) == 0:
        return np.zeros(bins)
    h, _ = np.histogram(x, bins=bins, density=True)
    return h


def seed_cal_stat_matrix(acoustic_array):
    """Seed 004's cal_stat_matrix, verbatim."""
    rows = []
    for b in acoustic_array:
        if b is None or len(b) < 2:
            rows.append(np.zeros(10 + 20))
            continue
        d = np.diff(b)
        d = d[d > 0]
        if d.size == 0:
            rows.append(np.zeros(10 + 20))
            continue
        d = d / (np.median(d) + 1e-8)
        rows.append(np.concatenate([seed_seq_stats(d), seed_hist_feat(d, bins=20)]))
    X_stat = np.vstack(rows)
    return np.nan_to_num(X_stat, nan=0.0, posinf=0.0, neginf=0.0)


@pytest.mark.parametrize("field", MsdConfig().fields)
def test_stats_match_seed_on_real_files(field):
    arrays = [np.array(h5py.File(p, "r")["analysis"][field]) for p in MSD_FILES]
    ours = np.vstack([msd_field_stats(a) for a in arrays])
    np.testing.assert_array_equal(ours, seed_cal_stat_matrix(arrays))


@pytest.mark.parametrize(
    "arr",
    [
        np.array([]),
        np.array([1.0]),
        np.array([3.0, 3.0, 3.0]),
        np.array([5.0, 4.0, 1.0]),
        np.array([0.0, 1.0]),
        np.array([0.0, 1.0, np.nan, 3.0, 4.5, 4.0, 7.0]),
        np.cumsum(np.random.default_rng(1).exponential(size=500)),
    ],
    ids=["empty", "one", "constant", "decreasing", "two", "nan", "random"],
)
def test_stats_match_seed_on_edge_cases(arr):
    ours = msd_field_stats(arr)
    assert ours.shape == (30,) and np.isfinite(ours).all()
    np.testing.assert_array_equal(ours, seed_cal_stat_matrix([arr])[0])


def test_stat_names_and_columns():
    names = stat_names()
    assert names[:10] == [
        "mean",
        "std",
        "iqr",
        "cv",
        "skew",
        "kurtosis",
        "q10",
        "q50",
        "q90",
        "length",
    ]
    assert names[10] == "hist_00" and names[-1] == "hist_19" and len(names) == 30
    cols = msd_columns()
    assert len(cols) == 30 * len(MsdConfig().fields)
    assert cols[0] == "msd_bars_start__mean" and cols[-1] == "msd_tatums_start__hist_19"


def test_read_track_metadata():
    track = read_msd_track(MSD_FILES[0])
    assert track["track_id"] == "TRAAABD128F429CF47"
    assert (track["artist"], track["title"], track["year"]) == ("The Box Tops", "Soul Deep", 1969.0)
    assert track["analysis"]["bars_start"].shape == (73,)
    unknown_year = read_msd_track(MSD_FILES[1])
    assert np.isnan(unknown_year["year"])


def test_not_msd_and_missing_field_raise(tmp_path):
    with pytest.raises(MsdTrackError, match="analysis"):
        read_msd_track(NOT_MSD)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(512))
    with pytest.raises(MsdTrackError, match="not an HDF5"):
        read_msd_track(str(garbage))
    lacking = tmp_path / "lacking.h5"
    shutil.copy(MSD_FILES[0], lacking)
    os.chmod(lacking, 0o644)
    with h5py.File(lacking, "a") as f:
        del f["analysis/tatums_start"]
    with pytest.raises(MsdTrackError, match="tatums_start"):
        read_msd_track(str(lacking))


def test_stage_turns_bad_files_into_error_rows():
    stage = MsdStage(RunConfig())
    paths = [*MSD_FILES, NOT_MSD]
    batch = {
        "track_id": np.array([Path(p).stem for p in paths], dtype=object),
        "path": np.array(paths, dtype=object),
    }
    out = stage(batch)
    n = len(paths)
    assert list(out["error_type"]) == [""] * (n - 1) + ["MsdTrackError"]
    assert list(out["error_stage"]) == [""] * (n - 1) + ["msd"]
    for col in msd_columns():
        assert out[col].dtype == np.float32 and out[col].shape == (n,)
        assert np.isfinite(out[col][:-1]).all() and np.isnan(out[col][-1])
    assert out["artist"][0] == "The Box Tops" and out["artist"][-1] == ""
    assert list(out["year"]) == ["1969", "", "1982", "2007", ""]
    expected = msd_field_stats(read_msd_track(MSD_FILES[2])["analysis"]["beats_start"])
    got = np.array([out[f"msd_beats_start__{s}"][2] for s in stat_names()])
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_manifest_streams_in_chunks(tmp_path):
    root = tmp_path / "msd"
    for i, src in enumerate(MSD_FILES):
        sub = root / "A" / chr(ord("A") + i % 2)
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, sub / Path(src).name)
    (root / "notes.txt").write_text("not a track")
    assert sorted(Path(p).name for p in iter_msd_paths(str(root))) == sorted(
        Path(p).name for p in MSD_FILES
    )
    out = tmp_path / "out" / "manifest.parquet"
    assert write_msd_manifest(str(root), str(out), chunk_rows=3) == len(MSD_FILES)
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == 2
    table = pq.read_table(out).to_pandas()
    assert sorted(table["track_id"]) == sorted(Path(p).stem for p in MSD_FILES)
    assert all(Path(p).is_file() for p in table["path"])
    with pytest.raises(ValueError, match="no MSD"):
        write_msd_manifest(str(tmp_path / "out"), str(tmp_path / "empty.parquet"))


def _synthetic_features(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = msd_columns()
    frame = pd.DataFrame(rng.normal(size=(n, len(cols))).astype(np.float32), columns=cols)
    frame.insert(0, "track_id", [f"TR{i:05d}" for i in range(n)])
    return frame


def test_oof_tables_per_field(tmp_path):
    features = _synthetic_features(60)
    features.loc[7, "msd_bars_start__mean"] = np.nan
    shuffled = features.sample(frac=1.0, random_state=3)
    cfg = RunConfig(msd=MsdConfig(oof_k=4))
    tables = msd_oof_tables(shuffled, cfg)
    assert set(tables) == set(MsdConfig().fields)
    bars = tables["bars_start"]
    assert list(bars.columns) == ["track_id", "dist_00", "dist_01", "dist_02", "dist_03", "label"]
    assert len(bars) == 59 and "TR00007" not in set(bars["track_id"])
    assert len(tables["beats_start"]) == 60
    np.testing.assert_array_equal(bars["label"], bars.filter(like="dist_").to_numpy().argmin(1))
    again = msd_oof_tables(features, cfg)["bars_start"]
    pd.testing.assert_frame_equal(bars, again)
    paths = write_msd_oof(str(tmp_path), tables)
    assert len(paths) == len(tables)
    back = pd.read_parquet(tmp_path / "oof" / "bars_start.parquet")
    assert back["label"].dtype == np.int32 and back["dist_00"].dtype == np.float32
    pd.testing.assert_frame_equal(back, bars.reset_index(drop=True), check_dtype=True)


def test_oof_tables_clamp_on_tiny_inputs():
    tables = msd_oof_tables(_synthetic_features(4), RunConfig())
    table = tables["sections_start"]
    assert table.attrs == {"k": 3, "n_splits": 4}
    assert table.filter(like="dist_").shape == (4, 3)
    assert msd_oof_tables(_synthetic_features(1), RunConfig()) == {}


@pytest.mark.ray
def test_msd_pipeline_end_to_end(tmp_path, ray_local):
    """Folder → streamed manifest → MsdStage on Ray Data → shards, errors, metadata, OOF."""
    from soundclust_ray.sources.msd import (
        add_msd_metadata_to_manifest,
        msd_manifest,
        run_msd_pipeline,
    )
    from soundclust_ray.sources.msd_post import run_msd_field_oof

    root = tmp_path / "msd"
    root.mkdir()
    for src in [*MSD_FILES, NOT_MSD]:
        shutil.copy(src, root / Path(src).name)
    out = str(tmp_path / "out")
    path, n = msd_manifest(str(root), out)
    assert n == len(MSD_FILES) + 1
    info = run_msd_pipeline(path, out, RunConfig(), progress=lambda _: None)
    again = run_msd_pipeline(path, out, RunConfig(), progress=lambda _: None)
    counts = info["products"]["features"]
    assert (counts["written"], counts["failed"], info["n_failed"]) == (len(MSD_FILES), 1, 1)
    assert again["products"]["features"]["skipped"] == len(MSD_FILES)
    errors = pd.read_parquet(Path(out) / "errors.parquet")
    assert errors["track_id"].tolist() == ["not_msd"] and errors["stage"].tolist() == ["msd"]
    assert add_msd_metadata_to_manifest(out) == len(MSD_FILES)
    manifest = pd.read_parquet(Path(out) / "manifest.parquet").set_index("track_id")
    assert manifest.loc["TRAAABD128F429CF47", "artist"] == "The Box Tops"
    assert manifest.loc["TRAAABD128F429CF47", "year"] == 1969
    written = run_msd_field_oof(out, RunConfig())
    assert len(written) == len(MsdConfig().fields)
    oof = pd.read_parquet(Path(out) / "oof" / "tatums_start.parquet")
    assert sorted(oof["track_id"]) == sorted(Path(p).stem for p in MSD_FILES)
