"""Manifest building: folder scans, manifest files, validation."""

from __future__ import annotations

import json
import os
import socket
import threading

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from soundclust_ray.manifest import ManifestError, build_manifest, scan_folder


def test_scan_is_recursive_case_insensitive_and_uses_relative_ids(tmp_path):
    for rel in [
        "a/x.wav",
        "b/x.wav",
        "b/c/Y.MP3",
        "z.Flac",
        "notes.txt",
        "d/e.opus",
        "f.m4a",
        "g.aiff",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "dir.wav").mkdir()
    df = scan_folder(tmp_path)
    assert df["track_id"].tolist() == [
        "a/x.wav",
        "b/c/Y.MP3",
        "b/x.wav",
        "d/e.opus",
        "f.m4a",
        "g.aiff",
        "z.Flac",
    ]
    assert all(p.startswith(str(tmp_path)) for p in df["path"])


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_manifest_formats_resolve_relative_paths_and_keep_metadata(tmp_path, fmt):
    (tmp_path / "audio").mkdir()
    df = pd.DataFrame(
        {"path": ["audio/a.wav", "audio/b.wav"], "genre": ["rock", "jazz"], "year": [1999, 2001]}
    )
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        df.to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict(orient="records")))
    m = build_manifest(str(path))
    assert m["track_id"].tolist() == ["audio/a.wav", "audio/b.wav"]
    assert m["path"].tolist() == [str(tmp_path / "audio/a.wav"), str(tmp_path / "audio/b.wav")]
    assert m["genre"].tolist() == ["rock", "jazz"]
    assert m["year"].tolist() == [1999, 2001]
    assert (m["invalid_reason"] == "").all()


def test_missing_input_and_missing_path_column_are_clear_errors(tmp_path):
    with pytest.raises(ManifestError, match="input not found"):
        build_manifest(str(tmp_path / "nope"))
    bad = tmp_path / "m.csv"
    bad.write_text("file,genre\na.wav,rock\n")
    with pytest.raises(ManifestError, match="no 'path' column"):
        build_manifest(str(bad))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(ManifestError, match="no audio files"):
        build_manifest(str(empty_dir))


def test_escaping_paths_and_duplicate_ids_are_flagged_not_dropped(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "m.csv").write_text(
        "track_id,path\nt1,a.wav\nt1,b.wav\nt3,../outside.wav\nt4,/etc/passwd\n"
    )
    m = build_manifest(str(sub / "m.csv"))
    assert len(m) == 4
    reasons = dict(zip(m["track_id"], m["invalid_reason"], strict=True))
    assert reasons["t1"] == ""
    assert reasons["t1#dup1"].startswith("duplicate track_id")
    assert "escapes" in reasons["t3"] and "escapes" in reasons["t4"]
    allowed = build_manifest(str(sub / "m.csv"), allow_outside_root=True)
    assert (allowed.set_index("track_id").loc[["t3", "t4"], "invalid_reason"] == "").all()


def test_limit_takes_the_first_rows(tmp_path):
    (tmp_path / "m.csv").write_text("path\n" + "\n".join(f"{i}.wav" for i in range(10)))
    assert len(build_manifest(str(tmp_path / "m.csv"), limit=3)) == 3


def _run_with_deadline(fn, seconds: float = 10.0):
    """fn() in a thread: a call that blocks (opening a FIFO) fails the test instead of hanging."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked: something opened a FIFO"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_links_out_of_the_root_are_error_rows_in_scans_and_manifests(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"x")
    root = tmp_path / "root"
    (root / "audio").mkdir(parents=True)
    (root / "audio" / "ok.wav").write_bytes(b"x")
    (root / "audio" / "inner_link.wav").symlink_to(root / "audio" / "ok.wav")
    (root / "audio" / "out_link.wav").symlink_to(outside / "secret.wav")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    scan = build_manifest(str(root)).set_index("track_id")
    assert "linked_dir/secret.wav" not in scan.index
    assert scan.loc["audio/inner_link.wav", "invalid_reason"] == ""
    assert scan.loc["audio/inner_link.wav", "path"] == str(root / "audio" / "ok.wav")
    assert "escapes" in scan.loc["audio/out_link.wav", "invalid_reason"]
    allowed = build_manifest(str(root), allow_outside_root=True).set_index("track_id")
    assert allowed.loc["audio/out_link.wav", "path"] == str(outside / "secret.wav")
    assert allowed.loc["audio/out_link.wav", "invalid_reason"] == ""
    (root / "m.csv").write_text("path\naudio/ok.wav\naudio/out_link.wav\nlinked_dir/secret.wav\n")
    m = build_manifest(str(root / "m.csv")).set_index("track_id")
    assert m.loc["audio/ok.wav", "invalid_reason"] == ""
    assert "escapes" in m.loc["audio/out_link.wav", "invalid_reason"]
    assert "escapes" in m.loc["linked_dir/secret.wav", "invalid_reason"]


def test_fifos_sockets_and_devices_are_error_rows_never_opened(tmp_path):
    (tmp_path / "ok.wav").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.wav")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.wav"))
    try:
        scan = _run_with_deadline(lambda: build_manifest(str(tmp_path))).set_index("track_id")
        (tmp_path / "m.csv").write_text("path\npipe.wav\n/dev/null\nok.wav\n")
        m = _run_with_deadline(
            lambda: build_manifest(str(tmp_path / "m.csv"), allow_outside_root=True)
        ).set_index("track_id")
    finally:
        server.close()
    assert scan.loc["pipe.wav", "invalid_reason"] == "not a regular file (a FIFO): not read"
    assert scan.loc["sock.wav", "invalid_reason"] == "not a regular file (a socket): not read"
    assert scan.loc["ok.wav", "invalid_reason"] == ""
    assert "FIFO" in m.loc["pipe.wav", "invalid_reason"]
    assert "character device" in m.loc["/dev/null", "invalid_reason"]


def test_a_fifo_given_as_the_manifest_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="is a FIFO, not a manifest file or a folder"):
        _run_with_deadline(lambda: build_manifest(str(tmp_path / "m.csv")))


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_rows_with_an_empty_or_null_path_are_error_rows(tmp_path, fmt):
    df = pd.DataFrame({"track_id": ["a", "b", "c", None], "path": ["a.wav", None, "  ", None]})
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        df.to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict(orient="records")))
    m = build_manifest(str(path))
    assert m["track_id"].tolist() == ["a", "b", "c", "#row4"]
    assert m["invalid_reason"].tolist() == ["", "empty path", "empty path", "empty path"]


def test_non_utf8_file_names_are_error_rows_that_parquet_can_store(tmp_path):
    root = os.fsencode(tmp_path)
    with open(os.path.join(root, b"caf\xe9.wav"), "wb") as f:
        f.write(b"x")
    (tmp_path / "fine.wav").write_bytes(b"x")
    m = build_manifest(str(tmp_path))
    assert m["track_id"].tolist() == ["caf\\xe9.wav", "fine.wav"]
    assert "not valid UTF-8" in m.loc[0, "invalid_reason"]
    assert m.loc[1, "invalid_reason"] == ""
    pa.Table.from_pandas(m, preserve_index=False)


def test_integer_and_mixed_ids_are_kept_as_written(tmp_path):
    pq.write_table(
        pa.table({"track_id": [7, None, 9], "path": ["a.wav", "b.wav", "c.wav"]}),
        tmp_path / "ints.parquet",
    )
    assert build_manifest(str(tmp_path / "ints.parquet"))["track_id"].tolist() == [
        "7",
        "b.wav",
        "9",
    ]
    (tmp_path / "m.jsonl").write_text(
        '{"track_id": 1, "path": "a.wav"}\n{"path": "b.wav"}\n'
        '{"track_id": "x", "path": "c.wav"}\n{"track_id": 2.5, "path": "d.wav"}\n'
    )
    assert build_manifest(str(tmp_path / "m.jsonl"))["track_id"].tolist() == [
        "1",
        "b.wav",
        "x",
        "2.5",
    ]
    (tmp_path / "m.csv").write_text("track_id,path\n007,a.wav\n8,b.wav\n")
    assert build_manifest(str(tmp_path / "m.csv"))["track_id"].tolist() == ["007", "8"]


def test_duplicate_renames_never_collide_with_a_real_id(tmp_path):
    (tmp_path / "m.csv").write_text("track_id,path\nt1,a.wav\nt1,b.wav\nt1#dup1,c.wav\nt1,d.wav\n")
    m = build_manifest(str(tmp_path / "m.csv"))
    assert m["track_id"].tolist() == ["t1", "t1#dup2", "t1#dup1", "t1#dup3"]
    assert m["track_id"].is_unique
    assert m["invalid_reason"].str.startswith("duplicate").tolist() == [False, True, False, True]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32", "cp1252", "latin-1"])
def test_manifests_in_other_encodings_read_their_text_right(tmp_path, encoding):
    text = "path,artist\nB\u00e9la.wav,Bart\u00f3k B\u00e9la\nx.wav,Dvo\u0159\u00e1k\n"
    if encoding in ("cp1252", "latin-1"):
        text = text.replace("\u0159", "r")
    (tmp_path / "m.csv").write_bytes(text.encode(encoding))
    m = build_manifest(str(tmp_path / "m.csv"))
    assert m["track_id"].tolist() == ["B\u00e9la.wav", "x.wav"]
    assert m["artist"].tolist()[0] == "Bart\u00f3k B\u00e9la"


def test_broken_json_lines_and_non_objects_are_error_rows(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        '{"path": "a.wav"}\n{"path": "b.wav"\n\n[1, 2]\n{"path": "c.wav", "genre": "rock"}\n'
    )
    m = build_manifest(str(tmp_path / "m.jsonl"))
    assert len(m) == 4 and m["track_id"].is_unique
    reasons = m["invalid_reason"].tolist()
    assert reasons[0] == "" and reasons[3] == ""
    assert reasons[1].startswith("record 2: not valid JSON")
    assert reasons[2] == "record 4: not a JSON object (list)"
    (tmp_path / "m.json").write_text('[{"path": "a.wav", "track_id": 3}, {"path": "b.wav"}]')
    assert build_manifest(str(tmp_path / "m.json"))["track_id"].tolist() == ["3", "b.wav"]


def test_source_id_is_size_and_mtime_and_changes_when_the_file_does(tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"12345")
    os.utime(clip, ns=(1_000_000_000, 1_700_000_000_123_456_789))
    (tmp_path / "m.csv").write_text("path\na.wav\nmissing.wav\n")
    scan = build_manifest(str(tmp_path))
    m = build_manifest(str(tmp_path / "m.csv"))
    assert scan["source_id"].tolist() == ["5:1700000000123456789"]
    assert m["source_id"].tolist() == ["5:1700000000123456789", ""]
    assert m["invalid_reason"].tolist() == ["", ""]
    clip.write_bytes(b"123456")
    assert build_manifest(str(tmp_path))["source_id"][0].startswith("6:")


def test_a_manifest_column_named_source_id_is_refused(tmp_path):
    (tmp_path / "m.csv").write_text("path,source_id\na.wav,x\n")
    with pytest.raises(ManifestError, match="'source_id' is reserved"):
        build_manifest(str(tmp_path / "m.csv"))
