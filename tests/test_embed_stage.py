"""The embedding stages called directly (no Ray), and once through Ray Data (ragged columns)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from conftest import BAD, GTZAN, tone
from test_clap import build_tiny_clap, clap_cfg, reference_vectors

from soundclust_ray.config import RunConfig
from soundclust_ray.embed.base import WindowOutputs
from soundclust_ray.embed.pooling import pool_windows
from soundclust_ray.stages.base import ERROR_FIELDS, NODE_FIELD, current_node_id
from soundclust_ray.stages.embed import (
    EMBEDDING,
    PREPARED,
    WINDOW_INDEX,
    EmbedPrepareStage,
    EmbedStage,
    embed_resources,
)

SR = 48000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_clap(tmp_path_factory.mktemp("tiny_clap"))


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    """Two real GTZAN clips (30 s → 3 windows), a 4 s tone (1 window), and two bad files."""
    folder = tmp_path_factory.mktemp("tracks")
    sf.write(folder / "tone.wav", tone(440.0, 4.0, 22050), 22050)
    paths = [
        GTZAN / "blues.00000.wav",
        folder / "tone.wav",
        BAD / "random_bytes.mp3",
        GTZAN / "jazz.00000.wav",
        BAD / "too_short_0.2s.wav",
    ]
    return {
        "track_id": np.array([f"t{i}" for i in range(len(paths))], dtype=object),
        "path": np.array([str(p) for p in paths], dtype=object),
    }


def run_cfg(tiny_dir, strategy="chunk_average", batch=3) -> RunConfig:
    embed = clap_cfg(tiny_dir, strategy=strategy, batch_size=batch)
    return RunConfig(embed=replace(embed, backends=("clap",)))


@pytest.fixture(scope="module")
def prepared(tiny_dir, tracks):
    return EmbedPrepareStage(run_cfg(tiny_dir), "clap")(tracks)


class TestPrepare:
    def test_columns_and_ragged_windows(self, prepared, tracks):
        assert list(prepared["track_id"]) == list(tracks["track_id"])
        assert list(prepared["path"]) == list(tracks["path"])
        shapes = [np.asarray(p).shape for p in prepared[PREPARED]]
        assert shapes == [(3, 10 * SR), (1, 10 * SR), (0, 0), (3, 10 * SR), (0, 0)]
        assert all(np.asarray(p).dtype == np.float32 for p in prepared[PREPARED])

    def test_failures_are_rows(self, prepared):
        assert list(prepared["error_stage"]) == [
            "",
            "",
            "embed_prepare:clap",
            "",
            "embed_prepare:clap",
        ]
        assert list(prepared["error_type"])[2] == "AudioDecodeError"
        assert "too short" in prepared["error_message"][4]
        assert set(prepared[NODE_FIELD]) == {current_node_id()}  # or the session Ray's node


class TestEmbed:
    def test_chunk_average(self, tiny_dir, prepared):
        out = EmbedStage(run_cfg(tiny_dir), "clap", device="cpu")(prepared)
        assert list(out["track_id"]) == ["t0", "t1", "t2", "t3", "t4"]
        assert WINDOW_INDEX not in out
        emb = out[EMBEDDING]
        assert emb.shape == (5, 16) and emb.dtype == np.float32
        ok = [0, 1, 3]
        assert np.isfinite(emb[ok]).all() and np.isnan(emb[[2, 4]]).all()
        assert list(out["error_stage"]) == ["", "", "embed_prepare:clap", "", "embed_prepare:clap"]
        assert list(out["path"]) == list(prepared["path"])
        windows = np.asarray(prepared[PREPARED][0])
        expected = reference_vectors(tiny_dir, windows).mean(axis=0)
        np.testing.assert_allclose(emb[0], expected, atol=1e-5)
        assert set(out) == {"track_id", "path", EMBEDDING, *ERROR_FIELDS, NODE_FIELD}

    def test_chunk_level(self, tiny_dir, prepared):
        average = EmbedStage(run_cfg(tiny_dir), "clap", device="cpu")(prepared)
        out = EmbedStage(run_cfg(tiny_dir, "chunk_level", batch=8), "clap", device="cpu")(prepared)
        ok = out["error_type"] == ""
        assert list(out["track_id"][ok]) == ["t0"] * 3 + ["t1"] + ["t3"] * 3
        assert list(out[WINDOW_INDEX][ok]) == [0, 1, 2, 0, 0, 1, 2]
        assert out[WINDOW_INDEX].dtype == np.int32
        norms = np.linalg.norm(out[EMBEDDING][ok], axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
        t0 = out[EMBEDDING][out["track_id"] == "t0"]
        np.testing.assert_allclose(t0.mean(axis=0), average[EMBEDDING][0], atol=1e-5)

    def test_empty_batch(self, tiny_dir, prepared):
        empty = {k: v[:0] for k, v in prepared.items()}
        out = EmbedStage(run_cfg(tiny_dir), "clap", device="cpu")(empty)
        assert out[EMBEDDING].shape == (0, 16) and len(out["track_id"]) == 0

    def test_model_failure_is_a_row(self, tiny_dir, prepared):
        """A track whose windows the model rejects fails alone; the rest of the batch succeeds."""
        batch = dict(prepared)
        bad = np.empty(len(batch[PREPARED]), dtype=object)
        bad[:] = list(batch[PREPARED])
        bad[1] = np.ones((1, 1234), np.float32)
        batch[PREPARED] = bad
        out = EmbedStage(run_cfg(tiny_dir), "clap", device="cpu")(batch)
        assert list(out["error_stage"]) == [
            "",
            "embed:clap",
            "embed_prepare:clap",
            "",
            "embed_prepare:clap",
        ]
        assert np.isfinite(out[EMBEDDING][[0, 3]]).all()

    def test_resources_without_gpu(self, tiny_dir):
        res = embed_resources(run_cfg(tiny_dir), "clap")
        assert res.num_gpus == 0 and res.num_cpus >= 1 and res.batch_size == 8


def test_pool_windows():
    out = WindowOutputs(
        np.array([[1, 0], [3, 4]], np.float32), np.array([[0.2], [0.6]], np.float32)
    )
    mean, top = pool_windows(out, "mean"), pool_windows(out, "max")
    np.testing.assert_allclose(mean.embeddings, [[2, 2]])
    np.testing.assert_allclose(mean.tags, [[0.4]])
    np.testing.assert_allclose(top.embeddings, [[3, 4]])
    assert pool_windows(WindowOutputs(out.embeddings), "mean").tags is None
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_windows(out, "median")


@pytest.mark.ray
def test_stages_through_ray_data(ray_local, tiny_dir, tracks, prepared):
    """Prepare hands ragged window arrays to the model actor through Ray Data blocks.

    One track per prepare batch makes every block a different fixed-shape tensor ((3, n),
    (1, n), (0, 0)) that Ray must merge into one variable-shaped batch for the model.
    """
    import ray.data

    cfg = run_cfg(tiny_dir, "chunk_level")
    items = [
        {"track_id": t, "path": p} for t, p in zip(tracks["track_id"], tracks["path"], strict=True)
    ]
    ds = ray.data.from_items(items, override_num_blocks=5)
    ds = ds.map_batches(
        EmbedPrepareStage,
        fn_constructor_args=(cfg, "clap"),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    ds = ds.map_batches(
        EmbedStage,
        fn_constructor_args=(cfg, "clap"),
        batch_size=4,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    rows = ds.to_pandas().sort_values(["track_id", WINDOW_INDEX]).reset_index(drop=True)
    direct = EmbedStage(cfg, "clap", device="cpu")(prepared)
    ok = rows["error_type"] == ""
    assert list(rows["track_id"][ok]) == ["t0"] * 3 + ["t1"] + ["t3"] * 3
    got = np.stack(rows[EMBEDDING][ok].to_list())
    np.testing.assert_allclose(got, direct[EMBEDDING][direct["error_type"] == ""], atol=1e-5)
    assert set(rows["error_stage"][~ok]) == {"embed_prepare:clap"}


@pytest.mark.ray
def test_cli_run_with_tiny_clap(ray_local, tiny_dir, tmp_path):
    """``soundclust run --embed clap --clap-model DIR``: 16-d float32 shards and an error row."""
    import shutil

    import pyarrow.parquet as pq

    from soundclust_ray import shards
    from soundclust_ray.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("blues.00000.wav", "jazz.00000.wav", "metal.00000.wav"):
        shutil.copy(GTZAN / name, corpus / name)
    shutil.copy(BAD / "random_bytes.mp3", corpus / "broken.mp3")
    out = tmp_path / "out"
    args = ["run", str(corpus), "--out", str(out), "--features", "none", "--embed", "clap"]
    code = main([*args, "--clap-model", str(tiny_dir), "--no-analysis", "--quiet"])
    assert code == 0
    paths = shards.list_shards(str(out), "embeddings/clap")
    tables = [pq.read_table(p) for p in paths]
    assert all(
        str(t.schema.field(EMBEDDING).type) == "fixed_size_list<element: float>[16]" for t in tables
    )
    ids = sorted(i for t in tables for i in t.column("track_id").to_pylist())
    assert ids == ["blues.00000.wav", "jazz.00000.wav", "metal.00000.wav"]
    errors = pq.read_table(out / "errors.parquet").to_pandas()
    assert list(errors["track_id"]) == ["broken.mp3"]
    assert errors["stage"][0] == "embed_prepare:clap"


def test_model_actor_threads_follow_its_cpus(ray_local) -> None:
    """A Ray worker's torch threads become the CPUs it reserved; the driver's are left alone."""
    from soundclust_ray.stages.embed import pin_torch_threads, worker_cpus

    @ray_local.remote(num_cpus=2)
    def threads_after_pin(preset: int) -> tuple[int | None, int]:
        import torch

        torch.set_num_threads(preset)
        pin_torch_threads()
        return worker_cpus(), torch.get_num_threads()

    assert ray_local.get(threads_after_pin.remote(3)) == (2, 2)
    assert worker_cpus() is None
