"""Manifest building: folder scans, manifest files, validation."""

from __future__ import annotations

import json

import pandas as pd
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
