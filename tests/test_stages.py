"""Every stage called directly (no Ray) on small numpy batches, and the shard writer.

Checks the contract the pipeline relies on: bad tracks become error rows (never exceptions),
every written column matches the stage's WRITES declaration, and a shard is either complete
and listed or absent.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import BAD, MSD, tone

from soundclust_ray import outdir, shards
from soundclust_ray.config import RunConfig
from soundclust_ray.stages.base import ERROR_FIELDS, NODE_FIELD, current_node_id, family_batch
from soundclust_ray.stages.embed import EmbedPrepareStage, EmbedStage, prepare_stage_name
from soundclust_ray.stages.features import ClassicChunkStage, FeatureStage
from soundclust_ray.stages.msd import MsdStage
from soundclust_ray.stages.writer import EMBEDDING_TYPE, ShardWriter, declared_type

SR = 22050


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two real short clips plus an empty file and a text file named .wav."""
    root = tmp_path_factory.mktemp("stage_clips")
    sf.write(root / "low.wav", tone(220.0, 11.0, SR, noise=0.05, seed=1), SR)
    sf.write(root / "high.flac", tone(1760.0, 4.0, SR, noise=0.05, seed=2), SR)
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_text("this is not audio\n")
    return root


def batch_of(paths) -> dict[str, np.ndarray]:
    paths = [str(p) for p in paths]
    ids = [p.rsplit("/", 1)[-1] for p in paths]
    return {"track_id": np.asarray(ids, dtype=object), "path": np.asarray(paths, dtype=object)}


def good_and_bad(clips) -> dict[str, np.ndarray]:
    return batch_of([clips / n for n in ("low.wav", "high.flac", "empty.wav", "text.wav")])


def value_columns(out: dict[str, np.ndarray]) -> list[str]:
    return [c for c in out if c not in (*ERROR_FIELDS, NODE_FIELD, "path")]


def assert_matches_writes(stage_cls, out: dict[str, np.ndarray]) -> None:
    """Every value column is declared, and its numpy dtype fits the declared arrow type."""
    for name in value_columns(out):
        declared = declared_type(stage_cls.WRITES, name)
        values = out[name]
        if declared == EMBEDDING_TYPE:
            assert values.ndim == 2 and values.dtype == np.float32, name
        elif pa.types.is_string(declared):
            assert all(isinstance(v, str) for v in values), name
        elif pa.types.is_floating(declared):
            assert values.dtype == np.float32, name
        elif pa.types.is_integer(declared):
            assert np.issubdtype(values.dtype, np.integer), name


def assert_errors(out: dict[str, np.ndarray], ok: set[str], failed: set[str], stage: str):
    types = dict(zip(out["track_id"], out["error_type"], strict=True))
    assert {t for t, e in types.items() if e} == failed
    assert {t for t, e in types.items() if not e} == ok
    failed_rows = np.asarray(out["error_type"]).astype(str) != ""
    assert set(np.asarray(out["error_stage"])[failed_rows]) == {stage}
    assert all(m for m in np.asarray(out["error_message"])[failed_rows])
    assert set(out[NODE_FIELD]) == {current_node_id()}  # 'local', or the session Ray's node


class TestFeatureStage:
    def test_good_and_bad_tracks(self, clips):
        stage = FeatureStage(RunConfig())
        out = family_batch(stage(good_and_bad(clips)), "timbre")
        columns = stage.columns["timbre"]
        assert_errors(out, {"low.wav", "high.flac"}, {"empty.wav", "text.wav"}, stage.NAME)
        assert set(value_columns(out)) == {"track_id", *columns}
        assert_matches_writes(FeatureStage, out)
        ok = np.asarray(out["error_type"]) == ""
        matrix = np.column_stack([out[c] for c in columns])
        assert np.isfinite(matrix[ok]).all() and np.isnan(matrix[~ok]).all()
        low, high = (list(out["track_id"]).index(t) for t in ("low.wav", "high.flac"))
        centroid = next(c for c in columns if "centroid" in c and "mean" in c)
        assert out[centroid][high] > out[centroid][low]

    def test_each_row_computes_only_its_pending_families(self, clips):
        stage = FeatureStage(RunConfig(), ("timbre", "classic"))
        batch = batch_of([clips / "low.wav", clips / "high.flac", clips / "empty.wav"])
        batch["families"] = np.asarray(["classic", "timbre,classic", "timbre"], dtype=object)
        out = stage(batch)
        timbre, classic = family_batch(out, "timbre"), family_batch(out, "classic")
        assert timbre["track_id"].tolist() == ["high.flac", "empty.wav"]
        assert classic["track_id"].tolist() == ["low.wav", "high.flac"]
        assert timbre["error_type"][0] == "" and timbre["error_type"][1] != ""
        assert (classic["error_type"] == "").all()
        assert np.isfinite(np.column_stack([classic[c] for c in stage.columns["classic"]])).all()
        assert not any(c.startswith("classic__") for c in timbre)


class TestClassicChunkStage:
    def test_one_row_per_chunk(self, clips):
        stage = ClassicChunkStage(RunConfig())
        out = stage(good_and_bad(clips))
        assert_errors(out, {"low.wav", "high.flac"}, {"empty.wav", "text.wav"}, stage.NAME)
        assert_matches_writes(ClassicChunkStage, out)
        ids = list(out["track_id"])
        assert ids.count("low.wav") > ids.count("high.flac") >= 1
        low = np.asarray(out["chunk_index"])[np.asarray(ids) == "low.wav"]
        assert low.tolist() == list(range(len(low)))
        failed = np.asarray(out["error_type"]) != ""
        assert (np.asarray(out["chunk_index"])[failed] == -1).all()


@pytest.fixture(scope="module")
def musicnn_cfg():
    base = RunConfig()
    return replace(base, embed=replace(base.embed, backends=("musicnn",)))


@pytest.fixture(scope="module")
def prepared(musicnn_cfg, clips):
    return EmbedPrepareStage(musicnn_cfg, "musicnn")(
        batch_of([clips / "low.wav", clips / "empty.wav", clips / "text.wav"])
    )


class TestEmbedStages:
    def test_prepare(self, prepared):
        assert set(prepared) == {"track_id", "path", "prepared", *ERROR_FIELDS, NODE_FIELD}
        assert_errors(
            prepared, {"low.wav"}, {"empty.wav", "text.wav"}, prepare_stage_name("musicnn")
        )
        assert prepared["prepared"][0].size > 0 and prepared["prepared"][0].dtype == np.float32

    def test_embed_pools_one_row_per_track(self, musicnn_cfg, prepared):
        stage = EmbedStage(musicnn_cfg, "musicnn", device="cpu")
        out = stage(prepared)
        assert out["track_id"].tolist() == ["low.wav", "empty.wav", "text.wav"]
        assert_matches_writes(EmbedStage, out)
        assert out["embedding"].shape == (3, stage.embedder.dim)
        assert np.isfinite(out["embedding"][0]).all() and np.isnan(out["embedding"][1:]).all()
        assert list(out["error_type"][1:]) == list(prepared["error_type"][1:])
        assert len(stage.tag_columns) == 50 and all(c in out for c in stage.tag_columns)


class TestMsdStage:
    def test_real_files_and_a_non_msd_file(self):
        stage = MsdStage(RunConfig())
        files = sorted(MSD.glob("*.h5"))
        out = stage(batch_of([*files, BAD / "not_msd.h5"]))
        ok = {f.name for f in files}
        assert_errors(out, ok, {"not_msd.h5"}, stage.NAME)
        assert_matches_writes(MsdStage, out)
        assert set(stage.columns) <= set(out)
        good = np.asarray(out["error_type"]) == ""
        assert np.isfinite(np.column_stack([out[c] for c in stage.columns])[good]).any(axis=0).all()
        assert all(out["title"][good])


SPEC = (
    ("track_id", pa.string()),
    ("chunk_index", pa.int32()),
    ("embedding", EMBEDDING_TYPE),
    ("*__*", pa.float32()),
)


def writer_batch(n: int = 4, failed: tuple[int, ...] = (2,)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    errors = np.array(["ValueError" if i in failed else "" for i in range(n)], dtype=object)
    return {
        "track_id": np.array(["a", "a", "b", "c"][:n], dtype=object),
        "path": np.array([f"/x/{i}.wav" for i in range(n)], dtype=object),
        "chunk_index": np.arange(n, dtype=np.int64),
        "embedding": rng.standard_normal((n, 3)),
        "timbre__mfcc_01_mean": rng.standard_normal(n),
        "error_stage": np.where(errors != "", "features", "").astype(object),
        "error_type": errors,
        "error_message": np.where(errors != "", "broken", "").astype(object),
        NODE_FIELD: np.array(["n1"] * n, dtype=object),
    }


class TestShardWriter:
    def test_declared_schema_error_shard_and_summary(self, tmp_path):
        out = str(tmp_path)
        summary = ShardWriter(out, "features", "h1", SPEC)(writer_batch())
        [shard] = shards.list_shards(out, "features")
        table = pq.read_table(shard)
        assert table.schema.field("track_id").type == pa.string()
        assert table.schema.field("chunk_index").type == pa.int32()
        assert table.schema.field("timbre__mfcc_01_mean").type == pa.float32()
        assert table.schema.field("embedding").type == pa.list_(pa.float32(), 3)
        assert table["track_id"].to_pylist() == ["a", "a", "c"]
        assert table.schema.metadata[outdir.CONFIG_HASH_KEY] == b"h1"
        [errors] = (tmp_path / outdir.ERRORS_DIR).iterdir()
        err = pq.read_table(errors)
        assert err["track_id"].to_pylist() == ["b"] and err["error_type"].to_pylist() == [
            "ValueError"
        ]
        assert summary["track_id"].tolist() == ["a", "b", "c"]
        assert summary["ok"].tolist() == [True, False, True]
        assert summary[NODE_FIELD].tolist() == ["n1"] * 3

    def test_undeclared_column_raises(self, tmp_path):
        batch = writer_batch(failed=())
        batch["stray"] = np.zeros(4)
        with pytest.raises(TypeError, match="stray"):
            ShardWriter(str(tmp_path), "features", "h1", SPEC)(batch)
        assert shards.list_shards(str(tmp_path), "features") == []

    def test_failure_halfway_leaves_no_listed_shard(self, tmp_path, monkeypatch):
        real_write = pq.write_table

        def write_half_then_fail(table, where, filesystem=None, **kwargs):
            real_write(table, where, filesystem=filesystem, **kwargs)
            data = filesystem.open_input_file(where).read()
            with filesystem.open_output_stream(where) as f:
                f.write(data[: len(data) // 2])
            raise OSError("disk full")

        monkeypatch.setattr(pq, "write_table", write_half_then_fail)
        with pytest.raises(OSError, match="disk full"):
            ShardWriter(str(tmp_path), "features", "h1", SPEC)(writer_batch(failed=()))
        assert shards.list_shards(str(tmp_path), "features") == []
        leftovers = list((tmp_path / "features").iterdir())
        assert leftovers and all(outdir.is_temporary(p.name) for p in leftovers)

    def test_every_call_is_committed_and_shards_fill_up_to_shard_rows(self, tmp_path):
        """What `ray job stop` + resubmit relies on: a track is in a listed shard as soon as its
        call returns, on a corpus of fewer tracks than shard_rows too."""
        out = str(tmp_path)
        writer = ShardWriter(out, "features", "h1", SPEC, shard_rows=3)
        ids = [f"t{i}" for i in range(8)]
        sizes = [1, 1, 4, 1, 1]  # one-track blocks, and one block spanning a full shard
        done: list[str] = []
        for size in sizes:
            batch = track_batch(ids[len(done) : len(done) + size])
            writer(batch)
            done += batch["track_id"].tolist()
            assert sorted(shards.read_column(out, "features").to_pylist()) == done
            assert not [p for p in (tmp_path / "features").iterdir() if p.name.startswith(".tmp")]
        per_shard = [
            pq.read_table(p)["track_id"].to_pylist() for p in shards.list_shards(out, "features")
        ]
        assert sorted(map(len, per_shard)) == [2, 3, 3]
        assert sorted(i for ids_ in per_shard for i in ids_) == ids

    def test_multi_row_tracks_are_never_split_across_shards(self, tmp_path):
        out = str(tmp_path)
        writer = ShardWriter(out, outdir.FEATURE_CHUNKS, "h1", SPEC, shard_rows=2)
        writer(track_batch(["a", "a", "a", "b", "b", "c"]))
        writer(track_batch(["d", "d", "e"]))
        per_shard = [
            pq.read_table(p)["track_id"].to_pylist()
            for p in shards.list_shards(out, outdir.FEATURE_CHUNKS)
        ]
        assert sorted(per_shard) == [["a", "a", "a", "b", "b"], ["c", "d", "d"], ["e"]]

    def test_a_failed_rewrite_keeps_the_committed_rows_of_the_filling_shard(
        self, tmp_path, monkeypatch
    ):
        out = str(tmp_path)
        writer = ShardWriter(out, "features", "h1", SPEC, shard_rows=4)
        writer(track_batch(["a"]))
        real_write = pq.write_table

        def fail(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(pq, "write_table", fail)
        with pytest.raises(OSError, match="disk full"):
            writer(track_batch(["b"]))
        assert shards.read_column(out, "features").to_pylist() == ["a"]
        monkeypatch.setattr(pq, "write_table", real_write)
        writer(track_batch(["c"]))
        [shard] = shards.list_shards(out, "features")
        assert pq.read_table(shard)["track_id"].to_pylist() == ["a", "c"]


def track_batch(track_ids: list[str]) -> dict[str, np.ndarray]:
    """A writer batch of good rows, one per entry of ``track_ids`` (repeats: a multi-row track)."""
    n = len(track_ids)
    batch = writer_batch(n=min(n, 4), failed=())
    batch = {k: np.resize(v, (n, *np.shape(v)[1:])) for k, v in batch.items()}
    batch["track_id"] = np.array(track_ids, dtype=object)
    return batch
