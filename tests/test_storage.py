"""Inputs and outputs on object storage, against a real S3-compatible server on 127.0.0.1.

The server is moto's standalone server (``moto[server]``, see ``s3_server.py``), started by the
fixture as a subprocess. The whole job with INPUT and OUT on s3:// runs on a two-node cluster
in ``test_cluster.py``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import BAD, GTZAN, tone

from soundclust_ray.audio import AudioDecodeError, load_audio
from soundclust_ray.manifest import ManifestError, build_manifest
from soundclust_ray.storage import RangeReader

pytest.importorskip("moto", reason="needs moto[server] (pip install -e '.[test]')")

from s3_server import BUCKET, s3_server  # noqa: E402

CLIPS = ["blues.00000.wav"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The S3 server, with its env set in this process too (the code reads only the env)."""
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with s3_server(log) as server, pytest.MonkeyPatch.context() as mp:
        for name, value in server.env.items():
            mp.setenv(name, value)
        yield server


def test_manifest_on_s3_resolves_relative_paths_beside_it(s3):
    s3.put("m1/audio/a.wav", b"x")
    s3.put(
        "m1/labels.csv",
        b"track_id,path,genre\nt1,audio/a.wav,rock\n"
        b"t2,../elsewhere/b.wav,jazz\nt3,s3://other/c.wav,pop\n",
    )
    m = build_manifest(f"s3://{BUCKET}/m1/labels.csv")
    assert m["path"].tolist() == [
        f"s3://{BUCKET}/m1/audio/a.wav",
        f"s3://{BUCKET}/elsewhere/b.wav",
        "s3://other/c.wav",
    ]
    assert m["genre"].tolist() == ["rock", "jazz", "pop"]
    reasons = dict(zip(m["track_id"], m["invalid_reason"], strict=True))
    assert reasons["t1"] == "" and reasons["t3"] == ""
    assert "escapes" in reasons["t2"]
    rows = [{"path": "audio/a.wav", "year": 1999}]
    s3.put("m1/labels.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    j = build_manifest(f"s3://{BUCKET}/m1/labels.jsonl")
    assert j["path"].tolist() == [f"s3://{BUCKET}/m1/audio/a.wav"] and j["year"].tolist() == [1999]


def test_prefix_scan_is_recursive_and_missing_inputs_are_clear_errors(s3):
    for key in [
        "scan/a/x.wav",
        "scan/b/x.WAV",
        "scan/b/c/y.flac",
        "scan/notes.txt",
        "scan/dir.wav/inner.txt",
        "scan/c/Symphony #5 in C%20minor.mp3",
    ]:
        s3.put(key, b"x")
    m = build_manifest(f"s3://{BUCKET}/scan")
    assert m["track_id"].tolist() == [
        "a/x.wav",
        "b/c/y.flac",
        "b/x.WAV",
        "c/Symphony #5 in C%20minor.mp3",
    ]
    assert m["path"].tolist() == [f"s3://{BUCKET}/scan/{t}" for t in m["track_id"]]
    with pytest.raises(AudioDecodeError, match="not a decodable"):
        load_audio(m["path"].iloc[-1], 22050)
    with pytest.raises(ManifestError, match="input not found"):
        build_manifest(f"s3://{BUCKET}/nothing-here")
    s3.put("empty/notes.txt", b"x")
    with pytest.raises(ManifestError, match="no audio files"):
        build_manifest(f"s3://{BUCKET}/empty")


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_audio_on_s3_decodes_exactly_like_the_local_file(s3, tmp_path, ext):
    local = tmp_path / f"t.{ext}"
    sf.write(local, tone(330, 2.0, 44100, noise=0.1), 44100)
    uri = s3.put(f"decode/t.{ext}", local.read_bytes())
    np.testing.assert_array_equal(load_audio(uri, 22050), load_audio(local, 22050))


def test_mp3_on_s3_goes_through_pyav_from_a_file_object(s3, tmp_path):
    import av

    path = tmp_path / "t.mp3"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=22050)
        stream.layout = "mono"
        samples = tone(220, 1.0, 22050)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = 22050
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    uri = s3.put("decode/t.mp3", path.read_bytes())
    np.testing.assert_allclose(load_audio(uri, 16000), load_audio(path, 16000), atol=1e-6)


def test_remote_reads_stop_after_max_duration(s3, shared_data):
    data = (GTZAN / CLIPS[0]).read_bytes()
    uri = s3.put("long/clip.wav", data)
    y = load_audio(uri, 22050, max_duration_s=2.0)
    assert len(y) == 2 * 22050
    with RangeReader(uri, block_bytes=64 * 1024) as reader, sf.SoundFile(reader) as f:
        f.read(frames=2 * f.samplerate)
        assert reader.bytes_fetched < len(data) / 5


def test_bad_remote_files_are_clear_track_errors(s3, shared_data):
    cases = {
        "empty.wav": "empty file",
        "random_bytes.mp3": "not a decodable audio file",
        "text.flac": "not a decodable audio file",
    }
    for name, message in cases.items():
        uri = s3.put(f"bad/{name}", (BAD / name).read_bytes())
        with pytest.raises(AudioDecodeError, match=message):
            load_audio(uri, 22050)
    with pytest.raises(AudioDecodeError, match="file not found"):
        load_audio(f"s3://{BUCKET}/bad/missing.wav", 22050)
    with pytest.raises(AudioDecodeError, match="directory"):
        load_audio(f"s3://{BUCKET}/bad", 22050)


def test_file_uris_behave_like_local_paths(tmp_path, shared_data):
    shutil.copy(GTZAN / CLIPS[0], tmp_path / "a.wav")
    (tmp_path / "labels.csv").write_text("path,genre\na.wav,blues\n")
    m = build_manifest((tmp_path / "labels.csv").as_uri())
    assert m["path"].tolist() == [str(tmp_path / "a.wav")]
    assert build_manifest(tmp_path.as_uri())["track_id"].tolist() == ["a.wav"]
    y = load_audio((tmp_path / "a.wav").as_uri(), 22050, max_duration_s=1.0)
    np.testing.assert_array_equal(y, load_audio(tmp_path / "a.wav", 22050, max_duration_s=1.0))


@pytest.mark.slow
def test_analysis_reads_shards_from_and_writes_results_to_s3(s3):
    """The driver step on an OUT that is an s3:// URI (shards written as the pipeline does)."""
    import pyarrow as pa
    from helpers import config_with

    from soundclust_ray import shards
    from soundclust_ray.analysis.driver import analyze

    rng = np.random.default_rng(0)
    ids = [f"t{i:02d}" for i in range(24)]
    genre = ["a"] * 12 + ["b"] * 12
    values = rng.normal(size=(24, 6)).astype(np.float32) + np.repeat([[0.0], [6.0]], 12, axis=0)
    out = f"s3://{BUCKET}/analysis/out"
    fs, base = shards.resolve(out)
    manifest = pa.table(
        {"track_id": ids, "path": [f"s3://{BUCKET}/{t}.wav" for t in ids], "genre": genre}
    )
    shards.write_table_atomic(fs, shards.join(base, "manifest.parquet"), manifest)
    for half in (slice(0, 12), slice(12, 24)):
        table = pa.table(
            {"track_id": ids[half], **{f"timbre__v{j}": values[half, j] for j in range(6)}}
        )
        shards.write_table_atomic(fs, shards.new_shard_path(base, "features"), table, "h")
    metrics = analyze(out, config_with(k=2), label_col="genre", progress=False)
    assert metrics["n_tracks"] == 24
    assert metrics["ari"] == pytest.approx(1.0)
    keys = s3.keys("analysis/out")
    assert {"clusters.parquet", "metrics.json", "report.html"} <= set(keys)
    clusters = pq.read_table(f"{BUCKET}/analysis/out/clusters.parquet", filesystem=s3.fs)
    assert sorted(clusters.column("track_id").to_pylist()) == ids


def summary_outputs(out: str, capsys) -> list[str]:
    """The entries the run summary lists under 'outputs in OUT/:' (and its 'open' line)."""
    from soundclust_ray.cli import print_summary

    print_summary(out, {"products": {}, "n_failed": 0}, None, 1.0)
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  outputs in "))
    assert lines[start] == f"  outputs in {out.rstrip('/')}/:"
    return [line.strip() for line in lines[start + 1 :]]


def test_run_summary_lists_what_is_in_an_s3_out_and_nothing_else(s3, tmp_path, capsys):
    """On an object store a folder is a key prefix: the summary asks OUT's filesystem, lists
    exactly the outputs present, and agrees with the same layout on a local disk."""
    import pyarrow.fs as pafs

    from soundclust_ray import outdir

    committed = [
        "run.json",
        "errors.parquet",
        "clusters.parquet",
        "oof.parquet",
        "features/part-1.parquet",
    ]
    not_outputs = ["oof/.tmp-0123.parquet"]  # a writer's temporary: oof/ is not an output yet
    local = tmp_path / "out"
    for key in committed + not_outputs:
        s3.put(f"summary/out/{key}", b"x")
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(b"x")
    fs, base = outdir.resolve(f"s3://{BUCKET}/summary/out")
    fs.create_dir(f"{base}/embeddings/clap")  # an empty folder (marker object): not an output
    (local / "embeddings" / "clap").mkdir(parents=True)
    assert fs.get_file_info(f"{base}/embeddings").type == pafs.FileType.Directory

    expected = ["errors.parquet", "features/", "clusters.parquet", "oof.parquet", "run.json"]
    expected.sort(key=lambda e: outdir.SUMMARY_OUTPUTS.index(e.rstrip("/")))
    for out in (f"s3://{BUCKET}/summary/out", f"s3://{BUCKET}/summary/out/", str(local)):
        assert summary_outputs(out, capsys) == expected, out

    s3.put("summary/out/report.html", b"<html></html>")
    s3.put("summary/out/embeddings/clap/part-1.parquet", b"x")
    listed = summary_outputs(f"s3://{BUCKET}/summary/out/", capsys)
    assert "report.html" in listed and "embeddings/" in listed
    assert listed[-1] == f"open s3://{BUCKET}/summary/out/report.html"


def wav_bytes(freq: float, seconds: float) -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, tone(freq, seconds, 22050, noise=0.05), 22050, format="WAV")
    return buffer.getvalue()


def run_cli_with_s3(args: list[str], s3) -> str:
    """The CLI in a fresh process (its own embedded Ray, whose workers get the S3 env)."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "soundclust_ray.cli", *args],
        env={**os.environ, **s3.env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.ray
def test_resume_on_s3_recomputes_a_replaced_object_and_forgets_a_deleted_one(s3):
    """Content-aware resume on an object store: identity = size + modified time of the key."""
    import pandas as pd

    from soundclust_ray import shards

    for i in range(3):
        s3.put(f"resume/audio/c{i}.wav", wav_bytes(220 * (i + 1), 3.0))
    out = f"s3://{BUCKET}/resume/out"
    args = [
        "run",
        f"s3://{BUCKET}/resume/audio",
        "--out",
        out,
        "--features",
        "timbre",
        "--embed",
        "none",
        "--no-analysis",
        "--num-cpus",
        "1",
    ]

    def features() -> pd.DataFrame:
        frames = [t.to_pandas() for t in shards.iter_shard_tables(out, "features/timbre")]
        return pd.concat(frames).set_index("track_id").sort_index()

    run_cli_with_s3(args, s3)
    before = features()
    s3.put("resume/audio/c1.wav", wav_bytes(1500, 3.5))  # same key, other content
    s3.fs.delete_file(f"{BUCKET}/resume/audio/c2.wav")
    text = run_cli_with_s3(args, s3)
    assert "1 changed files recomputed, 1 tracks no longer in the input" in text, text
    after = features()
    assert sorted(after.index) == ["c0.wav", "c1.wav"]
    pd.testing.assert_series_equal(after.loc["c0.wav"], before.loc["c0.wav"])
    assert not np.allclose(after.loc["c1.wav"], before.loc["c1.wav"])
