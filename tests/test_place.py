"""``soundclust place`` and ``run --keep-clusters``: new tracks join the saved clustering, the
tracks already there do not move."""

from __future__ import annotations

import pyarrow as pa
import pytest
from helpers import config_with
from test_analysis_driver import make_out
from test_placement_matrix import FAST, add_embeddings

from soundclust_ray import outdir, shards
from soundclust_ray.analysis.driver import analyze
from soundclust_ray.cli import main


def copy_rows_as_new_tracks(out: str, product: str, copies: dict[str, str]) -> None:
    """One more shard of ``product`` holding the rows of existing tracks under new ids."""
    fs, base = shards.resolve(out)
    table = pa.concat_tables(
        [pa.parquet.read_table(p, filesystem=fs) for p in shards.list_shards(out, product)]
    )
    ids = table.column("track_id").to_pylist()
    rows = [i for i, t in enumerate(ids) if t in copies]
    picked = table.take(rows)
    new_ids = pa.array([copies[t] for t in picked.column("track_id").to_pylist()])
    picked = picked.set_column(picked.schema.get_field_index("track_id"), "track_id", new_ids)
    shards.write_table_atomic(fs, shards.new_shard_path(base, product), picked)


@pytest.fixture()
def fitted_out(tmp_path):
    """A fused features + windowed-embeddings OUT analysed with UMAP, a PCA map, and HDBSCAN /
    UMAP in a PCA neighbour space (as above ``neighbors_pca_above`` rows)."""
    out = str(tmp_path / "out")
    ids, genre, X = make_out(out)
    add_embeddings(out, ids, X, "clap", 3)
    fast = {**FAST, "umap": True, "report": True}
    cfg = config_with(**fast, matrix="both", neighbors_pca_above=10, neighbors_pca_dims=4)
    analyze(out, cfg, label_col="genre", progress=False)
    return out, ids


def test_place_appends_the_new_tracks_and_keeps_the_old_rows(fitted_out, capsys):
    import pyarrow.parquet as pq

    out, ids = fitted_out
    before = pq.read_table(outdir.path(out, outdir.CLUSTERS))
    copies = {ids[0]: "new/copy_of_first", ids[-1]: "new/copy_of_last"}
    for product in (outdir.FEATURES, outdir.embeddings_product("clap")):
        copy_rows_as_new_tracks(out, product, copies)
    assert main(["place", out]) == 0
    after = pq.read_table(outdir.path(out, outdir.CLUSTERS))
    old = after.slice(0, before.num_rows)
    assert old.drop(["placed"]).equals(before)
    assert not any(old.column("placed").to_pylist())
    new = after.slice(before.num_rows).to_pandas().set_index("track_id")
    assert new["placed"].all() and sorted(new.index) == sorted(copies.values())
    frame = before.to_pandas().set_index("track_id")
    for original, copy in copies.items():
        for column in ("kmeans", "hdbscan"):
            assert new.loc[copy, column] == frame.loc[original, column]
        for column in ("pca_x", "pca_y", "umap_x", "umap_y"):
            assert new.loc[copy, column] == pytest.approx(frame.loc[original, column], abs=1e-3)
    assert "neighbors_pca" in outdir.read_json(out, outdir.METRICS)
    metrics = outdir.read_json(out, outdir.METRICS)
    assert metrics["placement"]["placed_tracks"] == 2 and metrics["n_tracks"] == len(ids)
    assert "2 tracks placed" in outdir.read_bytes(out, outdir.REPORT).decode()

    capsys.readouterr()
    assert main(["place", out]) == 2
    assert "nothing new to place" in capsys.readouterr().err


def test_place_refuses_without_a_model_or_with_another_matrix(fitted_out, tmp_path, capsys):
    out, ids = fitted_out
    fs, base = shards.resolve(out)
    table = pa.table({"track_id": ["other/1"], "timbre__f00": pa.array([1.0], pa.float32())})
    shards.write_table_atomic(fs, shards.new_shard_path(base, "embeddings/musicnn"), table)
    capsys.readouterr()
    assert main(["place", out]) == 2
    assert "have no features and embeddings/clap rows" in capsys.readouterr().err
    empty = str(tmp_path / "never_analysed")
    make_out(empty)
    assert main(["place", empty]) == 2
    assert "no finished analysis" in capsys.readouterr().err


@pytest.mark.ray
def test_run_keep_clusters_places_the_added_files(tmp_path, ray_local, capsys):
    import shutil

    import pyarrow.parquet as pq
    import soundfile as sf
    from conftest import tone

    clips = tmp_path / "clips"
    clips.mkdir()
    styles = {"low": (110.0, 0.0), "high": (1760.0, 0.0), "noise": (440.0, 0.8)}
    for name, (freq, noise) in styles.items():
        for i in range(2):
            y = tone(freq * (1 + 0.03 * i), 3.0, 22050, noise=noise, seed=i)
            sf.write(clips / f"{name}{i}.wav", y, 22050)
    out = str(tmp_path / "out")
    base = ["run", str(clips), "--out", out, "--features", "timbre", "--embed", "none"]
    assert main([*base, "--k", "3", "--quiet"]) == 0
    before = pq.read_table(outdir.path(out, outdir.CLUSTERS))
    shutil.copy(clips / "high0.wav", clips / "zz_copy_of_high0.wav")
    sf.write(clips / "zz_low_again.wav", tone(112.0, 3.0, 22050, seed=7), 22050)
    capsys.readouterr()
    assert main([*base, "--k", "3", "--keep-clusters"]) == 0
    assert "2 new tracks placed into the fit of 6 tracks" in capsys.readouterr().out
    after = pq.read_table(outdir.path(out, outdir.CLUSTERS))
    assert after.slice(0, before.num_rows).drop(["placed"]).equals(before)
    frame = after.to_pandas().set_index("track_id")
    label, placed = frame["kmeans"].to_dict(), frame["placed"].to_dict()
    assert [t for t, p in placed.items() if p] == ["zz_copy_of_high0.wav", "zz_low_again.wav"]
    assert label["zz_copy_of_high0.wav"] == label["high0.wav"]
    assert label["zz_low_again.wav"] == label["low0.wav"] == label["low1.wav"]


def test_keep_clusters_is_checked_before_any_work(tmp_path):
    from dataclasses import replace

    from soundclust_ray.config import RunConfig
    from soundclust_ray.errors import UserError
    from soundclust_ray.run import check_keep_clusters

    out = str(tmp_path / "out")
    said: list[str] = []
    make_out(out)
    cfg = replace(RunConfig(), analysis=config_with(**FAST, matrix="features"))
    assert not check_keep_clusters(out, cfg, [outdir.FEATURES], said.append)
    assert "no saved clustering yet" in said[-1]
    analyze(out, cfg.analysis, progress=False)
    assert check_keep_clusters(out, cfg, [outdir.FEATURES], said.append)
    with pytest.raises(UserError, match="fitted on features, which this run does not compute"):
        check_keep_clusters(out, cfg, [outdir.embeddings_product("clap")], said.append)
    with pytest.raises(UserError, match=r"made with other options \(pca\)"):
        check_keep_clusters(
            out, replace(cfg, analysis=replace(cfg.analysis, pca=3)), [outdir.FEATURES], said.append
        )
    other_k = replace(cfg, analysis=replace(cfg.analysis, k=4))
    assert check_keep_clusters(out, other_k, [outdir.FEATURES], said.append)
    assert "options are kept (k 3)" in said[-1]
