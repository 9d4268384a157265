"""Mistakes caught before Ray starts: model paths, --k, k against the corpus size.

Each case is one ``error:`` line and exit 2 within seconds, and Ray is never initialized.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from conftest import GTZAN

from soundclust_ray.cli import main

GTZAN_MINI = str(GTZAN / "labels.csv")


def one_line_exit_2(argv: list[str], capsys) -> str:
    """Run ``main(argv)`` in process: exit code 2 (returned or raised by argparse), one stderr
    line, Ray not started; returns that line. (How fast is a benchmark's business, never a
    test's on a noisy machine; Ray not starting is what makes it fast.)"""
    from unittest import mock

    with mock.patch("soundclust_ray.run.init_ray") as init_ray:  # the session's Ray may be up
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    init_ray.assert_not_called()
    return err[0]


def test_musicnn_names_are_the_bundled_weights():
    from soundclust_ray.config import MUSICNN_MODEL_NAMES
    from soundclust_ray.embed.musicnn import MODEL_NAMES

    assert MUSICNN_MODEL_NAMES == MODEL_NAMES


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("MSD_musicn", "did you mean MSD_musicnn?"),
        ("/no/such/weights.safetensors", "musicnn weights file /no/such/weights.safetensors not "),
        ("/tmp", "unknown musicnn model '/tmp'"),
    ],
)
def test_bad_musicnn_model(model, expected, tmp_path, capsys):
    argv = ["run", GTZAN_MINI, "--out", str(tmp_path / "o"), "--musicnn-model", model]
    assert expected in one_line_exit_2(argv, capsys)
    assert not (tmp_path / "o").exists()


def test_musicnn_weights_file_is_accepted(tmp_path):
    from soundclust_ray.cli import build_parser

    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"")
    args = build_parser().parse_args(["run", "x", "--out", "o", "--musicnn-model", str(weights)])
    assert args.musicnn_model == str(weights)
    args = build_parser().parse_args(["run", "x", "--out", "o", "--musicnn-model", "MTT_vgg"])
    assert args.musicnn_model == "MTT_vgg"


def test_bad_clap_model_directory(tmp_path, capsys, monkeypatch):
    base = ["run", GTZAN_MINI, "--out", str(tmp_path / "o"), "--embed", "clap", "--clap-model"]
    missing = tmp_path / "no_such_model"
    line = one_line_exit_2([*base, str(missing)], capsys)
    assert f"CLAP model directory {missing} does not exist" in line
    empty = tmp_path / "empty_model"
    empty.mkdir()
    assert "has no config.json" in one_line_exit_2([*base, str(empty)], capsys)
    (empty / "config.json").write_text("{}")
    monkeypatch.setattr("os.access", lambda path, mode: False)  # root reads everything
    assert "is not readable" in one_line_exit_2([*base, str(empty)], capsys)
    assert not (tmp_path / "o").exists()


def test_clap_hub_id_and_saved_directory_are_accepted(tmp_path):
    from soundclust_ray.cli import build_parser

    (tmp_path / "config.json").write_text("{}")
    for value in ("laion/larger_clap_music", str(tmp_path)):
        args = build_parser().parse_args(["run", "x", "--out", "o", "--clap-model", value])
        assert args.clap_model == value


@pytest.mark.parametrize("k", ["0", "-1", "1", "two"])
def test_bad_k_value(k, tmp_path, capsys):
    line = one_line_exit_2(["run", GTZAN_MINI, "--out", str(tmp_path / "o"), "--k", k], capsys)
    assert "argument --k: k must be" in line


@pytest.mark.parametrize("k", ["3", "5"])
def test_k_as_large_as_the_corpus_stops_the_run_before_ray(k, tmp_path, capsys):
    argv = ["run", GTZAN_MINI, "--out", str(tmp_path / "o"), "--limit", "3", "--k", k]
    line = one_line_exit_2(argv, capsys)
    assert f"--k {k} needs more than {k} tracks and the corpus has 3: give --k 2" in line


def test_k_too_large_for_the_corpus_in_a_fresh_process(tmp_path):
    """The whole command as a user runs it, imports included: one line, no Ray."""
    argv = ["run", GTZAN_MINI, "--out", str(tmp_path / "o"), "--limit", "4", "--k", "9"]
    done = subprocess.run(
        [sys.executable, "-m", "soundclust_ray.cli", *argv, "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.strip().splitlines() == [
        "error: --k 9 needs more than 9 tracks and the corpus has 4: give --k 3 or less, "
        "or --k auto"
    ]
    assert not (tmp_path / "o" / "logs").exists()  # Ray's log folder: Ray never started


def write_manifest(out, n_ok: int, n_invalid: int = 0) -> None:
    out.mkdir()
    ids = [f"t{i}" for i in range(n_ok + n_invalid)]
    frame = pd.DataFrame(
        {
            "track_id": ids,
            "path": [f"/data/{t}.wav" for t in ids],
            "invalid_reason": [""] * n_ok + ["not found"] * n_invalid,
        }
    )
    frame.to_parquet(out / "manifest.parquet")


def test_analyze_k_as_large_as_the_corpus_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    write_manifest(out, n_ok=5, n_invalid=3)  # invalid rows are no tracks to cluster
    line = one_line_exit_2(["analyze", str(out), "--k", "5"], capsys)
    assert line == (
        "error: --k 5 needs more than 5 tracks and the corpus has 5: give --k 4 or less, "
        "or --k auto"
    )
    line = one_line_exit_2(["analyze", "--out", str(out), "--k", "7"], capsys)
    assert "--k 7 needs more than 7 tracks and the corpus has 5" in line


def test_only_a_chosen_k_is_checked():
    """A default k larger than a small corpus is clamped by the analysis (with a note), so
    small runs without --k keep working; auto picks within the corpus by itself."""
    from soundclust_ray.errors import UserError
    from soundclust_ray.run import check_k_fits

    with pytest.raises(UserError, match="more than 8 tracks and the corpus has 2: give --k auto$"):
        check_k_fits(8, 2)
    check_k_fits(8, 9)
    check_k_fits("auto", 2)
    check_k_fits(8, 0)  # corpus size not known before the products (tabular source)
